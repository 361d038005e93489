//! hearth host client
