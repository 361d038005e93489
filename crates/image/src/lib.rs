//! hearth guest images
