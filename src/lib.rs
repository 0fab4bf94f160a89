//! restock: back-in-stock SMS. This crate is the server: configuration, start-up, the gRPC
//! endpoints and the health service. Business rules live in `restock-domain`, SQL in
//! `restock-store`.

pub mod app;
pub mod auth;
pub mod config;
pub mod demo;
pub mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod reporting;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod workers;

/// The generated code of the public API (`proto/restock/v1`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    pub mod v1 {
        tonic::include_proto!("restock.v1");
    }

    /// Encoded descriptors of every proto file and its imports, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/restock_descriptor.bin"));
}
