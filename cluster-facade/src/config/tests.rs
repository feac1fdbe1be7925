//! Tests of the configuration: defaults, validation, TOML.

use super::*;

#[test]
fn the_readme_configuration_parses_and_validates() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = start + readme[start..].find("```").expect("its end");
    let config: ClusterConfig = toml::from_str(&readme[start..end]).expect("the README's TOML parses");
    config.validate().expect("the README's configuration is valid");
}

#[test]
fn default_is_valid_and_roundtrips_through_toml() {
    let c = ClusterConfig::default();
    c.validate().unwrap();
    let text = toml::to_string(&c).unwrap();
    assert_eq!(toml::from_str::<ClusterConfig>(&text).unwrap(), c);
}

#[test]
fn replicas_below_num_voters_is_refused_by_name() {
    let c = ClusterConfig { num_voters: 5, replicas: 3, ..Default::default() };
    let errs = c.validate().unwrap_err().to_string();
    assert!(errs.contains("replicas: must be at least num_voters (5)"), "{errs}");
    let c: ClusterConfig = toml::from_str("replicas = 7\nnum_voters = 5").unwrap();
    assert_eq!((c.replicas, c.num_voters), (7, 5));
    c.validate().unwrap();
}

#[test]
fn every_problem_is_named() {
    let mut c = ClusterConfig {
        cluster_id: String::new(),
        host: "not an ip".into(),
        gossip_port: 7000,
        raft_port: 7000,
        seeds: vec!["nohost".into(), "h:0".into()],
        num_voters: 0,
        ..Default::default()
    };
    c.tags.insert("raft_role".into(), "x".into());
    c.raft.election_timeout_min_ms = 10;
    c.timeouts.short_id_reap_ms = 1;
    c.raft.max_frame_bytes = 1 << 32;
    c.quota.max_key_bytes = 0;
    let errs = c.validate().unwrap_err();
    let fields: Vec<_> = errs.0.iter().map(|p| p.field.as_str()).collect();
    for f in [
        "cluster_id",
        "host",
        "raft_port",
        "seeds[0]",
        "seeds[1]",
        "num_voters",
        "tags.raft_role",
        "raft.election_timeout_min_ms",
        "timeouts.short_id_reap_ms",
        "raft.max_frame_bytes",
        "quota.max_key_bytes",
    ] {
        assert!(fields.contains(&f), "{f} not named in {errs}");
    }
    assert!(errs.to_string().contains("num_voters: must be at least 1"));
}

#[test]
fn gossip_keys_are_checked_and_never_shown() {
    let good = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let c = ClusterConfig {
        gossip_keys: GossipKeys(vec![good.into(), "c2hvcnQ=".into(), "!!".into()]),
        data_dir: Some("/var/lib/carbon".into()),
        ..Default::default()
    };
    let errs = c.validate().unwrap_err();
    let fields: Vec<_> = errs.0.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["gossip_keys[1]", "gossip_keys[2]"]);
    assert!(!format!("{c:?} {errs}").contains(good), "a key leaked");
    let e = c.gossip_encryption();
    assert_eq!(e.keys, vec![std::array::from_fn::<u8, 32, _>(|i| i as u8)]);
    assert_eq!(e.keyring_file, Some(PathBuf::from("/var/lib/carbon").join(GOSSIP_KEYRING_FILE)));
    let text =
        toml::to_string(&ClusterConfig { gossip_keys: GossipKeys(vec![good.into()]), ..Default::default() })
            .unwrap();
    assert!(toml::from_str::<ClusterConfig>(&text).unwrap().validate().is_ok());
}

#[test]
fn a_wildcard_host_needs_an_advertised_one() {
    let c = ClusterConfig { host: "0.0.0.0".into(), ..Default::default() };
    let errs = c.validate().unwrap_err();
    assert_eq!(errs.0[0].field, "host", "{errs}");
    assert!(errs.to_string().contains("advertise_host"), "{errs}");
    let c = ClusterConfig { advertise_host: Some("127.0.0.1".into()), ..c };
    c.validate().unwrap();
    assert_eq!(c.advertised_host(), "127.0.0.1");
    let c = ClusterConfig { advertise_host: Some("::".into()), ..c };
    assert_eq!(c.validate().unwrap_err().0[0].field, "advertise_host");
}

#[test]
fn http_limits_sit_in_the_limits_table_beside_the_rpc_ones() {
    let c: ClusterConfig = toml::from_str(
        "[limits]\nmax_connections = 100\nmax_client_connections = 50\nhttp_max_connections = 7\nhttp_max_connections_per_address = 8\n",
    )
    .unwrap();
    assert_eq!((c.limits.max_connections, c.limits.http.http_max_connections), (100, 7));
    let errs = c.validate().unwrap_err();
    assert_eq!(errs.0[0].field, "limits.http_max_connections_per_address", "{errs}");
}

#[test]
fn unknown_fields_are_refused() {
    let err = toml::from_str::<ClusterConfig>("num_votrs = 3").unwrap_err();
    assert!(err.to_string().contains("num_votrs"), "{err}");
}
