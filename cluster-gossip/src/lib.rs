//! Gossip membership on chitchat (being built: see issue "cluster-gossip").
