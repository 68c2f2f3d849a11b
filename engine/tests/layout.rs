//! Copies of strided views (`contiguous`, `to_vec`) against a naive index walk, at sizes that
//! take the multi-threaded path (chunks of the output starting mid-row, mid-matrix).
use engine::Tensor;

fn naive(t: &Tensor, base: &[f32], base_shape: &[usize]) -> Vec<f32> {
    // Recompute every element from its multi-index through the view's strides.
    let _ = base_shape;
    let (shape, strides, off) = (t.shape().to_vec(), t.strides().to_vec(), t.offset());
    let n: usize = shape.iter().product();
    (0..n)
        .map(|mut i| {
            let mut o = off;
            for d in (0..shape.len()).rev() {
                o += (i % shape[d]) * strides[d];
                i /= shape[d];
            }
            base[o]
        })
        .collect()
}

#[test]
fn strided_copies_match_a_naive_walk_on_one_and_two_threads() {
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let shape = [37usize, 48, 101];
            let n: usize = shape.iter().product();
            let base: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let t = Tensor::from_vec(base.clone(), &shape).unwrap();
            let views = [
                t.permute(&[2, 0, 1]).unwrap(),
                t.permute(&[1, 2, 0]).unwrap(),
                t.transpose(0, 2).unwrap().narrow(1, 5, 40).unwrap(),
                t.narrow(2, 3, 90).unwrap(),
                t.narrow(0, 1, 36).unwrap(),
                t.reshape(&[37, 48, 101, 1])
                    .unwrap()
                    .permute(&[3, 1, 0, 2])
                    .unwrap(),
            ];
            for (k, v) in views.iter().enumerate() {
                let want = naive(v, &base, &shape);
                assert_eq!(v.to_vec(), want, "view {k} to_vec, {threads} threads");
                assert_eq!(
                    v.contiguous().to_vec(),
                    want,
                    "view {k} contiguous, {threads} threads"
                );
            }
        });
    }
}
