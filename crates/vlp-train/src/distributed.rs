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

fn tokio_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
