//! candle's BertModel on the shapes of benches/src/bin/infer.rs, printing the same JSON lines.
//! `candle-peer MINILM_DIR THREADS REPS RUNS` (threads: candle's CPU backend uses rayon and
//! gemm's own threading; RAYON_NUM_THREADS is set by the caller).
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (dir, threads, reps, runs) = (&args[1], &args[2], args[3].parse::<usize>().unwrap(), &args[4]);
    let dev = Device::Cpu;
    let minilm = {
        let cfg: Config = serde_json::from_str(&std::fs::read_to_string(format!("{dir}/config.json"))?).unwrap();
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[format!("{dir}/model.safetensors")], DType::F32, &dev)? };
        BertModel::load(vb, &cfg)?
    };
    let base = {
        let cfg: Config = serde_json::from_str(
            r#"{"vocab_size":30522,"hidden_size":768,"num_hidden_layers":12,"num_attention_heads":12,
            "intermediate_size":3072,"hidden_act":"gelu","hidden_dropout_prob":0.1,"max_position_embeddings":512,
            "type_vocab_size":2,"initializer_range":0.02,"layer_norm_eps":1e-12,"pad_token_id":0}"#,
        )
        .unwrap();
        let vm = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        BertModel::load(vb, &cfg)?
    };
    for run in runs.split(',') {
        let (name, shape) = run.split_once(':').unwrap();
        let (b, s) = shape.split_once('x').unwrap();
        let (b, s): (usize, usize) = (b.parse().unwrap(), s.parse().unwrap());
        let m = if name == "minilm" { &minilm } else { &base };
        let ids: Vec<u32> = (0..b * s).map(|i| 1000 + ((i as u64 * 7919) % 19000) as u32).collect();
        let ids = Tensor::from_vec(ids, (b, s), &dev)?;
        let types = ids.zeros_like()?;
        let mask = ids.ones_like()?;
        m.forward(&ids, &types, Some(&mask))?;
        let mut times = Vec::new();
        for _ in 0..reps {
            let t = std::time::Instant::now();
            let y = m.forward(&ids, &types, Some(&mask))?;
            std::hint::black_box(y.sum_all()?.to_scalar::<f32>()?);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{{\"impl\": \"candle\", \"model\": \"{name}\", \"batch\": {b}, \"seq\": {s}, \"threads\": {threads}, \"best_ms\": {:.2}, \"median_ms\": {:.2}}}",
            times[0],
            times[times.len() / 2]
        );
    }
    Ok(())
}
