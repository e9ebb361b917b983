//! One module per operation.
