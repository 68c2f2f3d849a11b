//! Multi-tensor AdamW with clipping.

use crate::harness::*;

#[test]
fn multi_tensor_adamw_with_clipping_matches_the_cpu_optimizer() {
    let g = gpu();
    let mut r = rng(9);
    let shapes: [(&str, Vec<usize>); 3] = [
        ("w", vec![300, 70]),
        ("x.bias", vec![70]),
        ("emb", vec![5000, 16]),
    ];
    let mut store = engine::ParamStore::new();
    let mut tensors = Vec::new();
    for (name, shape) in &shapes {
        let n: usize = shape.iter().product();
        let p = randn(&mut r, n, 0.5);
        store
            .insert(name, engine::Tensor::from_vec(p.clone(), shape).unwrap())
            .unwrap();
        tensors.push(k::adamw::AdamTensor {
            param: up(&g, &p),
            grad: up(&g, &vec![0.0f32; n]),
            copy: (*name == "emb").then(|| up(&g, &vec![bf16::ZERO; n])),
            decay: if engine::optim::decays(name) {
                0.01
            } else {
                0.0
            },
        });
    }
    let cfg = engine::optim::AdamWConfig {
        weight_decay: 0.01,
        bias_correction: true,
        ..Default::default()
    };
    let mut cpu = engine::optim::AdamW::new(cfg.clone());
    let mut opt = k::adamw::MultiAdamW::new(&g, tensors).unwrap();
    let lr = 1e-3;
    for step in 1..=3u64 {
        for (i, (name, shape)) in shapes.iter().enumerate() {
            let n: usize = shape.iter().product();
            let gr = randn(&mut r, n, 3.0);
            store
                .get(name)
                .unwrap()
                .set_grad(Some(engine::Tensor::from_vec(gr.clone(), shape).unwrap()));
            g.stream()
                .memcpy_htod(&gr, &mut opt.tensors[i].grad)
                .unwrap();
        }
        let want_norm = engine::optim::clip_grad_norm(&store, 1.0).unwrap();
        cpu.step(&store, lr).unwrap();
        let ns = down(&g, opt.clip_grad_norm(&g, 1.0).unwrap());
        close(
            &format!("grad norm step {step}"),
            &ns[..1],
            &[want_norm],
            F32_TOL,
        );
        let t = step as i32;
        let h = k::adamw::AdamStep {
            lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            bc1: 1.0 - cfg.beta1.powi(t),
            bc2: 1.0 - cfg.beta2.powi(t),
        };
        opt.step(&g, h, true).unwrap();
        for (i, (name, _)) in shapes.iter().enumerate() {
            let want = store.get(name).unwrap().value().to_vec();
            close(
                &format!("adamw {name} step {step}"),
                &down(&g, &opt.tensors[i].param),
                &want,
                F32_TOL,
            );
            if let Some(c) = &opt.tensors[i].copy {
                assert_eq!(
                    from_bf16(&down(&g, c)),
                    round_bf16(&down(&g, &opt.tensors[i].param)),
                    "bf16 copy of {name}"
                );
            }
        }
    }
}
