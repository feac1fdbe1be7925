//! The `Cluster` facade (being built: see issue "cluster-facade").
