//! [`Profiled`]: any [`Device`] with a stopwatch around each op, to see where a step's time goes.
//!
//! Each op runs on the wrapped device, then `sync` (a no-op on the CPU, a stream synchronisation
//! on a GPU, so that the time is the op's own and not its launch's), and its wall time is added
//! to the op's row. [`Profiled::table`] prints the rows, slowest first. Synchronising after every
//! op removes the overlap of launches with work, so a profiled step is slower than a real one;
//! the shares are what it is for.

use super::{AdamHyper, AttnDims, Device, LnSaved};
use crate::error::Result;
use crate::gelu::Gelu;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

/// A device whose ops are timed. `sync` waits for the device's queued work.
pub struct Profiled<'d, D: Device> {
    pub inner: &'d D,
    sync: Box<dyn Fn() + 'd>,
    rows: RefCell<BTreeMap<&'static str, (u64, f64)>>,
}

impl<'d, D: Device> Profiled<'d, D> {
    pub fn new(inner: &'d D, sync: impl Fn() + 'd) -> Self {
        Profiled {
            inner,
            sync: Box::new(sync),
            rows: RefCell::new(BTreeMap::new()),
        }
    }

    fn t<R>(&self, name: &'static str, f: impl FnOnce() -> R) -> R {
        let t0 = Instant::now();
        let r = f();
        (self.sync)();
        let mut rows = self.rows.borrow_mut();
        let e = rows.entry(name).or_default();
        e.0 += 1;
        e.1 += t0.elapsed().as_secs_f64();
        r
    }

    /// Clears the rows (after a warm-up).
    pub fn reset(&self) {
        self.rows.borrow_mut().clear();
    }

    /// `op  calls  ms  share`, slowest first, and the total.
    pub fn table(&self) -> String {
        let rows = self.rows.borrow();
        let total: f64 = rows.values().map(|r| r.1).sum();
        let mut v: Vec<_> = rows.iter().collect();
        v.sort_by(|a, b| b.1 .1.partial_cmp(&a.1 .1).unwrap());
        let mut s = format!("{:<20}{:>8}{:>12}{:>8}\n", "op", "calls", "ms", "share");
        for (name, (calls, secs)) in v {
            s += &format!(
                "{name:<20}{calls:>8}{:>12.3}{:>7.1}%\n",
                secs * 1e3,
                100.0 * secs / total.max(1e-12)
            );
        }
        s += &format!("{:<20}{:>8}{:>12.3}\n", "total", "", total * 1e3);
        s
    }
}

impl<D: Device> Device for Profiled<'_, D> {
    type Buf = D::Buf;
    type Grad = D::Grad;
    type W<'a>
        = D::W<'a>
    where
        Self: 'a;
    type Weights = D::Weights;
    type Ids = D::Ids;
    type AttnSaved = D::AttnSaved;
    type Optim = D::Optim;

    fn upload(&self, x: &[f32]) -> Result<D::Buf> {
        self.t("upload", || self.inner.upload(x))
    }
    fn download(&self, x: &D::Buf) -> Result<Vec<f32>> {
        self.t("download", || self.inner.download(x))
    }
    fn download_grad(&self, x: &D::Grad) -> Result<Vec<f32>> {
        self.t("download", || self.inner.download_grad(x))
    }
    fn zeros_grad(&self, n: usize) -> Result<D::Grad> {
        self.t("zeros", || self.inner.zeros_grad(n))
    }
    fn weights(&self, values: &[Vec<f32>]) -> Result<D::Weights> {
        self.inner.weights(values)
    }
    fn weight_refs<'a>(&self, w: &'a D::Weights) -> Vec<D::W<'a>> {
        self.inner.weight_refs(w)
    }
    fn upload_ids(&self, x: &[i64]) -> Result<D::Ids> {
        self.t("upload", || self.inner.upload_ids(x))
    }
    fn zeros(&self, n: usize) -> Result<D::Buf> {
        self.t("zeros", || self.inner.zeros(n))
    }
    fn len(&self, x: &D::Buf) -> usize {
        self.inner.len(x)
    }
    fn linear(
        &self,
        x: &D::Buf,
        w: D::W<'_>,
        b: Option<D::W<'_>>,
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Result<D::Buf> {
        self.t("linear", || self.inner.linear(x, w, b, rows, inp, out))
    }
    fn linear_dx(
        &self,
        dy: &D::Buf,
        w: D::W<'_>,
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Result<D::Buf> {
        self.t("linear_dx", || self.inner.linear_dx(dy, w, rows, inp, out))
    }
    fn linear_dw(
        &self,
        dy: &D::Buf,
        x: &D::Buf,
        rows: usize,
        inp: usize,
        out: usize,
        dw: &mut D::Grad,
        db: Option<&mut D::Grad>,
    ) -> Result<()> {
        self.t("linear_dw", || {
            self.inner.linear_dw(dy, x, rows, inp, out, dw, db)
        })
    }
    fn layernorm(
        &self,
        x: &D::Buf,
        residual: Option<&D::Buf>,
        dropout: (f32, u64),
        gamma: D::W<'_>,
        beta: D::W<'_>,
        cols: usize,
        eps: f32,
    ) -> Result<(D::Buf, LnSaved<D::Buf, D::Grad>)> {
        self.t("layernorm", || {
            self.inner
                .layernorm(x, residual, dropout, gamma, beta, cols, eps)
        })
    }
    fn layernorm_bwd(
        &self,
        saved: &LnSaved<D::Buf, D::Grad>,
        dy: &D::Buf,
        gamma: D::W<'_>,
        cols: usize,
        dgamma: &mut D::Grad,
        dbeta: &mut D::Grad,
    ) -> Result<D::Buf> {
        self.t("layernorm_bwd", || {
            self.inner
                .layernorm_bwd(saved, dy, gamma, cols, dgamma, dbeta)
        })
    }
    fn dropout(&self, x: &D::Buf, p: f32, seed: u64) -> Result<D::Buf> {
        self.t("dropout", || self.inner.dropout(x, p, seed))
    }
    fn gelu(&self, x: &D::Buf, kind: Gelu) -> Result<D::Buf> {
        self.t("gelu", || self.inner.gelu(x, kind))
    }
    fn gelu_bwd(&self, x: &D::Buf, dy: &D::Buf, kind: Gelu) -> Result<D::Buf> {
        self.t("gelu_bwd", || self.inner.gelu_bwd(x, dy, kind))
    }
    fn tanh(&self, x: &D::Buf) -> Result<D::Buf> {
        self.t("tanh", || self.inner.tanh(x))
    }
    fn tanh_bwd(&self, y: &D::Buf, dy: &D::Buf) -> Result<D::Buf> {
        self.t("tanh_bwd", || self.inner.tanh_bwd(y, dy))
    }
    fn add_into(&self, acc: &mut D::Buf, x: &D::Buf) -> Result<()> {
        self.t("add_into", || self.inner.add_into(acc, x))
    }
    fn embed(
        &self,
        ids: &D::Ids,
        types: &D::Ids,
        positions: Option<&D::Ids>,
        word: D::W<'_>,
        pos: D::W<'_>,
        typ: D::W<'_>,
        seq: usize,
        dim: usize,
    ) -> Result<D::Buf> {
        self.t("embed", || {
            self.inner
                .embed(ids, types, positions, word, pos, typ, seq, dim)
        })
    }
    fn embed_bwd(
        &self,
        ids: &D::Ids,
        types: &D::Ids,
        positions: Option<&D::Ids>,
        dy: &D::Buf,
        seq: usize,
        dim: usize,
        pad: Option<usize>,
        dword: &mut D::Grad,
        dpos: &mut D::Grad,
        dtyp: &mut D::Grad,
    ) -> Result<()> {
        self.t("embed_bwd", || {
            self.inner
                .embed_bwd(ids, types, positions, dy, seq, dim, pad, dword, dpos, dtyp)
        })
    }
    fn gather_rows(&self, x: &D::Buf, rows: &D::Ids, cols: usize) -> Result<D::Buf> {
        self.t("gather_rows", || self.inner.gather_rows(x, rows, cols))
    }
    fn argmax_rows(&self, x: &D::Buf, rows: usize, cols: usize) -> Result<Vec<i64>> {
        self.t("argmax_rows", || self.inner.argmax_rows(x, rows, cols))
    }
    fn scatter_add_rows(
        &self,
        dy: &D::Buf,
        rows: &D::Ids,
        cols: usize,
        dx: &mut D::Buf,
    ) -> Result<()> {
        self.t("scatter_add_rows", || {
            self.inner.scatter_add_rows(dy, rows, cols, dx)
        })
    }
    fn attention(
        &self,
        qkv: &D::Buf,
        dims: &AttnDims,
        scale: f32,
        dropout: (f32, u64),
    ) -> Result<(D::Buf, D::AttnSaved)> {
        self.t("attention", || {
            self.inner.attention(qkv, dims, scale, dropout)
        })
    }
    fn attention_bwd(
        &self,
        qkv: &D::Buf,
        out: &D::Buf,
        saved: &D::AttnSaved,
        dout: &D::Buf,
        dims: &AttnDims,
        scale: f32,
        dropout: (f32, u64),
    ) -> Result<D::Buf> {
        self.t("attention_bwd", || {
            self.inner
                .attention_bwd(qkv, out, saved, dout, dims, scale, dropout)
        })
    }
    fn optim_new(&self, params: &[Vec<f32>], decay: Vec<f32>) -> Result<D::Optim> {
        self.inner.optim_new(params, decay)
    }
    fn optim_parts<'a>(&self, o: &'a mut D::Optim) -> (Vec<D::W<'a>>, Vec<&'a mut D::Grad>) {
        self.inner.optim_parts(o)
    }
    fn optim_zero_grads(&self, o: &mut D::Optim) -> Result<()> {
        self.t("optim_zero_grads", || self.inner.optim_zero_grads(o))
    }
    fn optim_step(&self, o: &mut D::Optim, h: AdamHyper, max_norm: f32) -> Result<D::Grad> {
        self.t("optim_step", || self.inner.optim_step(o, h, max_norm))
    }
    fn optim_state(&self, o: &D::Optim) -> Result<Vec<(Vec<f32>, Vec<f32>, Vec<f32>)>> {
        self.inner.optim_state(o)
    }
    fn optim_set_moments(&self, o: &mut D::Optim, mv: Vec<(Vec<f32>, Vec<f32>)>) -> Result<()> {
        self.inner.optim_set_moments(o, mv)
    }
    fn cross_entropy(
        &self,
        logits: D::Buf,
        targets: &D::Ids,
        rows: usize,
        classes: usize,
        dloss: f32,
    ) -> Result<(D::Grad, D::Buf)> {
        self.t("cross_entropy", || {
            self.inner
                .cross_entropy(logits, targets, rows, classes, dloss)
        })
    }
}
