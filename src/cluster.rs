//! Offline hierarchical clustering (being written).
