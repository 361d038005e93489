//! envd's protobuf types (the E2B SDK's schema), with canonical proto3 JSON
//! serde impls: lowerCamelCase names, enums by name, 64-bit integers as
//! strings, bytes as base64, unknown fields ignored.

#[allow(clippy::all, missing_docs)]
pub mod process {
    include!(concat!(env!("OUT_DIR"), "/process.rs"));
    include!(concat!(env!("OUT_DIR"), "/process.serde.rs"));
}

#[allow(clippy::all, missing_docs)]
pub mod filesystem {
    include!(concat!(env!("OUT_DIR"), "/filesystem.rs"));
    include!(concat!(env!("OUT_DIR"), "/filesystem.serde.rs"));
}
