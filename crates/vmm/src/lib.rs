//! hearth VMM backends
