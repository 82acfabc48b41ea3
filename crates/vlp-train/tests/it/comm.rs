//! Gathering features across ranks: any rank, ragged token sets, gradients to the local rows.

use burn::collective::CollectiveConfig;
use burn::tensor::{Bool, Tensor, TensorData};
use vlp_core::backend::{TrainBackend as A, default_device};
use vlp_train::comm::{Collective, Comm, gather_features};
use vlp_train::method::Embeddings;

use crate::collective_lock;

fn host<const D: usize>(t: Tensor<A, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

/// Rank `r`'s tokens: `[2 + r, 3 + 2r, 4]`, value = 100 r + 10 row + token + channel / 10.
fn tokens(r: usize) -> Vec<f32> {
    let (n, t) = (2 + r, 3 + 2 * r);
    let mut v = Vec::new();
    for i in 0..n {
        for k in 0..t {
            for c in 0..4 {
                v.push((100 * r + 10 * i + k) as f32 + c as f32 / 10.0);
            }
        }
    }
    v
}

/// What a rank saw: gathered tokens, their padding, gathered rows, and the gradients of its own
/// tokens and rows.
type RankView = (Vec<f32>, Vec<bool>, Vec<f32>, Vec<f32>, Vec<f32>);

#[test]
fn ragged_token_sets_gather_to_the_padded_concatenation_with_local_gradients() {
    let _turn = collective_lock();
    let dev = default_device();
    // Global weights the loss multiplies the gathered tensor with: [5 rows, 5 tokens, 4].
    let w: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
    let results: Vec<RankView> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|r| {
                let (dev, w) = (dev.clone(), w.clone());
                s.spawn(move || {
                    let config = CollectiveConfig::default().with_num_devices(2);
                    let comm = Collective::<A>::register(r, 2, dev.clone(), config).unwrap();
                    let (n, t) = (2 + r, 3 + 2 * r);
                    let z = Tensor::<A, 3>::from_data(TensorData::new(tokens(r), [n, t, 4]), &dev)
                        .require_grad();
                    // Rank 1 marks its last token of every row as padding.
                    let pad: Vec<bool> = (0..n * t).map(|k| r == 1 && k % t == t - 1).collect();
                    let pad = Tensor::<A, 2, Bool>::from_data(TensorData::new(pad, [n, t]), &dev);
                    let rows = Tensor::<A, 2>::from_data(
                        TensorData::new(
                            (0..n * 2).map(|v| (r * 10 + v) as f32).collect::<Vec<_>>(),
                            [n, 2],
                        ),
                        &dev,
                    )
                    .require_grad();
                    let e = Embeddings::new()
                        .with_tokens("t", z.clone(), Some(pad))
                        .with_rows("r", rows.clone());
                    let g = gather_features(&comm, e).unwrap();
                    let (gt, gp) = g.tokens("t").unwrap();
                    let gr = g.rows("r").unwrap();
                    assert_eq!(gt.dims(), [5, 5, 4]);
                    assert_eq!(gr.dims(), [5, 2]);
                    let wt = Tensor::<A, 3>::from_data(TensorData::new(w, [5, 5, 4]), &dev);
                    let loss = (gt.clone() * wt).sum() + gr.clone().sum() * 3.0;
                    let grads = loss.backward();
                    let pad: Vec<bool> = gp
                        .unwrap()
                        .int()
                        .into_data()
                        .convert::<i64>()
                        .to_vec::<i64>()
                        .unwrap()
                        .into_iter()
                        .map(|v| v != 0)
                        .collect();
                    (
                        host(gt),
                        pad,
                        host(gr),
                        z.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap(),
                        rows.grad(&grads)
                            .unwrap()
                            .into_data()
                            .to_vec::<f32>()
                            .unwrap(),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The concatenation, rank 0's 3-token rows zero-padded to 5 tokens.
    let mut want = Vec::new();
    let mut want_pad = Vec::new();
    for r in 0..2 {
        let (n, t) = (2 + r, 3 + 2 * r);
        let v = tokens(r);
        for i in 0..n {
            for k in 0..5 {
                for c in 0..4 {
                    want.push(if k < t { v[(i * t + k) * 4 + c] } else { 0.0 });
                }
                want_pad.push(k >= t || (r == 1 && k == t - 1));
            }
        }
    }
    for (r, (gt, gp, gr, gz, grow)) in results.iter().enumerate() {
        assert_eq!(gt, &want, "rank {r}: gathered tokens");
        assert_eq!(gp, &want_pad, "rank {r}: gathered padding");
        let want_rows: Vec<f32> = (0..4)
            .map(|v| v as f32)
            .chain((0..6).map(|v| (10 + v) as f32))
            .collect();
        assert_eq!(gr, &want_rows, "rank {r}: gathered rows");
        // d loss / d z_r = the weights of rank r's block; rows get 3 each.
        let (n, t) = (2 + r, 3 + 2 * r);
        let offset = if r == 0 { 0 } else { 2 };
        let mut wz = Vec::new();
        for i in 0..n {
            for k in 0..t {
                for c in 0..4 {
                    wz.push(w[((offset + i) * 5 + k) * 4 + c]);
                }
            }
        }
        assert_eq!(gz.len(), wz.len());
        for (a, b) in gz.iter().zip(&wz) {
            assert!((a - b).abs() < 1e-6, "rank {r}: token gradient {a} vs {b}");
        }
        assert_eq!(grow, &vec![3.0; n * 2], "rank {r}: row gradient");
    }
}

#[test]
fn plain_tensors_of_any_rank_gather_in_rank_order() {
    let _turn = collective_lock();
    let dev = default_device();
    let out: Vec<Vec<f32>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|r| {
                let dev = dev.clone();
                s.spawn(move || {
                    let config = CollectiveConfig::default().with_num_devices(2);
                    let comm = Collective::<A>::register(r, 2, dev.clone(), config).unwrap();
                    let x = Tensor::<A, 4>::from_data(
                        TensorData::new(vec![r as f32 + 1.0; 2 * 3 * 2 * 2], [2, 3, 2, 2]),
                        &dev,
                    );
                    let g = comm.gather(x).unwrap();
                    assert_eq!(g.dims(), [4, 3, 2, 2]);
                    host(g)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let want: Vec<f32> = [1.0; 24].into_iter().chain([2.0; 24]).collect();
    assert_eq!(out, vec![want.clone(), want]);
}
