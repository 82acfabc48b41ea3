//! Multi-node set-up for `burn::collective`: rank 0 runs the coordinator, every node registers
//! with it. (burn-collective 0.21 hung on the second global all-reduce; the workspace carries
//! the fix in `patches/burn-collective`.)

use burn::collective::{AllReduceStrategy, CollectiveConfig};

use crate::config::DistributedConfig;
use crate::error::{Result, TrainError};

/// Adds the global (multi-node) parameters to `config`, starting the coordinator on rank 0.
pub fn multi_node(config: CollectiveConfig, d: &DistributedConfig) -> Result<CollectiveConfig> {
    let bad = |what: &str| TrainError::Config(format!("`distributed.{what}` must be HOST:PORT"));
    let port = |addr: &str, what: &str| -> Result<u16> {
        addr.rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .ok_or_else(|| bad(what))
    };
    let coord_port = port(&d.coordinator, "coordinator")?;
    if d.node_address.is_empty() {
        return Err(TrainError::Config("`distributed.node_address` is needed in a multi-node run (HOST:PORT this node serves tensors on)".into()));
    }
    let node_port = port(&d.node_address, "node_address")?;
    // burn's servers bind in a background task whose failure nobody sees: the peers would fail
    // later, in their first tensor download, naming no port. So the ports are checked here.
    free_here(node_port, "node_address", &d.node_address)?;
    if d.rank == 0 {
        free_here(coord_port, "coordinator", &d.coordinator)?;
        std::thread::spawn(move || match tokio_runtime() {
            Ok(rt) => rt.block_on(burn::collective::start_global_orchestrator(coord_port)),
            Err(e) => eprintln!("cannot start the coordinator: {e}"),
        });
    }
    let parse = |s: &str| s.parse().map_err(|e: String| TrainError::Config(e));
    Ok(config
        .with_num_nodes(d.world_size as u32)
        .with_global_address(parse(&format!("ws://{}", d.coordinator))?)
        .with_node_address(parse(&format!("ws://{}", d.node_address))?)
        .with_data_service_port(node_port)
        // burn-collective's default global ring all-reduce cannot split a tensor with fewer rows
        // than nodes (`RingReduceImpossible`), such as the logit scale and its gradient; a tree
        // reduces any shape.
        .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2)))
}

/// An error naming the field when `port` cannot be served on this machine now.
fn free_here(port: u16, field: &str, address: &str) -> Result<()> {
    std::net::TcpListener::bind(("0.0.0.0", port))
        .map(drop)
        .map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::AddrInUse => "; another process holds it",
                _ => "",
            };
            TrainError::Distributed(format!(
                "`distributed.{field}` = \"{address}\": port {port} cannot be served on this machine ({e}){hint}"
            ))
        })
}

/// A block of `len` consecutive free TCP ports for ranks on one machine (`vlp train --nodes`:
/// coordinator, liveness service and one data port per rank), taken *below* the kernel's
/// ephemeral range. Ports from `bind(:0)` lie inside that range, where the kernel also hands out
/// the local ports of outgoing connections: between this check and the rank binding its data
/// port, any connection on the machine could take the port, and the peer's tensor download then
/// fails ("Failed to connect to data server", seen in CI on 2026-12-01). Below the range only a
/// program that binds it explicitly can.
pub fn free_port_block(len: u16) -> Result<u16> {
    let (lo, hi) = below_ephemeral_range();
    if hi.saturating_sub(lo) <= len {
        return Err(TrainError::Distributed(format!(
            "no room for {len} ports between 10000 and the ephemeral port range (starting at {hi}); start the ranks with explicit coordinator and node addresses"
        )));
    }
    let span = (hi - lo - len) as u64;
    // A start that differs between processes, so concurrent launches try different blocks.
    let seed = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.finish()
    };
    for k in 0..200u64 {
        let p = lo + ((seed.wrapping_add(k.wrapping_mul(7919))) % span) as u16;
        // 0.0.0.0, as burn's servers bind: stricter than 127.0.0.1.
        if (0..len).all(|i| std::net::TcpListener::bind(("0.0.0.0", p + i)).is_ok()) {
            return Ok(p);
        }
    }
    Err(TrainError::Distributed(format!(
        "found no block of {len} free ports on this machine between {lo} and {hi}"
    )))
}

/// Ports `[lo, hi)` that the kernel does not assign on its own: from 10000 up to the start of
/// `/proc/sys/net/ipv4/ip_local_port_range` on Linux, else up to 32768 (below the IANA dynamic
/// range, 49152, that macOS and Windows use).
fn below_ephemeral_range() -> (u16, u16) {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    (10000, start.max(10000))
}

fn tokio_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_blocks_lie_below_the_ephemeral_range_and_are_free() {
        let (lo, hi) = below_ephemeral_range();
        for len in [1u16, 4] {
            let p = free_port_block(len).unwrap();
            assert!(p >= lo && p + len <= hi, "{p}+{len} not in {lo}..{hi}");
            for k in 0..len {
                std::net::TcpListener::bind(("0.0.0.0", p + k)).unwrap();
            }
        }
    }
}
