//! Where the device step's time goes, op by op (`engine::device::profile::Profiled`): BERT-Mini
//! (vocabulary 30,522) on a synthetic 32 x 128 batch, three steps after one warm-up.
//! `cargo run --release -p benches --bin step_profile [-- cpu|cpu-bf16|cuda|cuda-bf16 [MODEL B S]]`
//! (cuda needs `--features cuda`; every op is followed by a synchronisation there).
use benches::synthetic;
use bert::step::{from_named, StepTrainer};
use bert::{Bert, BertConfig, Task};
use engine::device::profile::Profiled;
use engine::device::Device;
use engine::optim::AdamWConfig;

fn profile<D: Device>(dev: &D, sync: impl Fn(), c: &BertConfig, b: usize, s: usize) {
    let model = Bert::init(c, Task::PreTraining, 1).unwrap();
    let values = from_named(c, |n: &str| model.params.get(n).map(|v| v.value().to_vec())).unwrap();
    drop(model);
    let p = Profiled::new(dev, sync);
    let mut tr = StepTrainer::new(&p, c, &values, AdamWConfig::default(), 0).unwrap();
    let t0 = std::time::Instant::now();
    for k in 0..4u64 {
        if k == 1 {
            p.reset();
        }
        let x = synthetic(c, b, s, false, k);
        tr.step(&[(x, Some(k))], 1e-4, 1.0).unwrap();
        if k == 0 {
            println!("warm-up step: {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!("three steps, per op:\n{}", p.table());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = args.first().map(String::as_str).unwrap_or("cpu");
    let model = args.get(1).map(String::as_str).unwrap_or("bert-mini");
    let b: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(32);
    let s: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(128);
    let c = BertConfig::preset(model, 30522).unwrap_or_else(|e| {
        eprintln!("step_profile: {e}");
        std::process::exit(2)
    });
    println!(
        "{model} B{b} S{s} on {device}, {} threads",
        rayon::current_num_threads()
    );
    match device {
        "cpu" => profile(&engine::device::Cpu, || {}, &c, b, s),
        "cpu-bf16" => profile(&engine::device::CpuBf16, || {}, &c, b, s),
        #[cfg(feature = "cuda")]
        "cuda" => {
            let d = engine::device::cuda::Cuda::new(0).unwrap();
            profile(&d, || d.gpu.synchronize().unwrap(), &c, b, s)
        }
        #[cfg(feature = "cuda")]
        "cuda-bf16" => {
            let d = engine::device::cuda::CudaBf16::new(0).unwrap();
            profile(&d, || d.inner.gpu.synchronize().unwrap(), &c, b, s)
        }
        other => {
            eprintln!(
                "step_profile: unknown device '{other}' (cpu, cpu-bf16, or cuda / cuda-bf16 with --features cuda)"
            );
            std::process::exit(2)
        }
    }
}
