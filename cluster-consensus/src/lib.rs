//! The raft key-value store on openraft (being built: see issue "cluster-consensus").
