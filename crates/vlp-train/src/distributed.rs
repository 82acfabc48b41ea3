//! Multi-node set-up for `burn::collective`: rank 0 runs the coordinator, every node registers
//! with it.

use burn::collective::{AllReduceStrategy, CollectiveConfig};

use crate::config::DistributedConfig;
use crate::error::{Result, TrainError};

/// Environment variable that lets a multi-node run start despite [`multi_node`]'s refusal.
pub const UNSTABLE_MULTI_NODE: &str = "VLP_UNSTABLE_MULTI_NODE";

/// Adds the global (multi-node) parameters to `config`, starting the coordinator on rank 0.
///
/// Refused unless [`UNSTABLE_MULTI_NODE`] is set: with Burn 0.21 two processes on one machine
/// connected, finished their first global all-reduce and hung in the second, so a multi-node run
/// would hang rather than train. The wiring stays for whoever tries a fixed burn-collective.
pub fn multi_node(config: CollectiveConfig, d: &DistributedConfig) -> Result<CollectiveConfig> {
    if std::env::var_os(UNSTABLE_MULTI_NODE).is_none() {
        return Err(TrainError::Distributed(format!(
            "multi-node training (world_size {}) is disabled: with Burn 0.21 two `vlp train` \
             processes connected, completed one global all-reduce and then hung in the next \
             (tree and centralized global all-reduce alike). Train on the devices of one machine \
             with `--devices N`, or set {UNSTABLE_MULTI_NODE}=1 to try anyway",
            d.world_size
        )));
    }
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
    if d.rank == 0 {
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

fn tokio_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
