//! The forwarding service (being built: see issue "cluster-service").
