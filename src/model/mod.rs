//! Model parameters and the model file (being written).
