//! Discovery with real sockets against the loopback STUN server of [`crate::testing::stun`].

use std::time::Duration;

use super::*;
use crate::testing::stun::{config, FilteringServer};

#[test]
fn the_real_driver_hands_out_the_mapping_before_the_filtering_verdict() {
    let server = FilteringServer::start();
    let mut early = None;
    let full = discover_staged(&config(server.addr, Duration::from_millis(200)), |r| {
        early = Some(r.clone())
    })
    .unwrap();
    let early = early.expect("a mapping verdict");
    assert!(early.nat && full.nat);
    assert_eq!(early.mapping, Some(Behaviour::EndpointIndependent));
    assert_eq!(early.mapped, full.mapped);
    assert_eq!((early.filtering, early.hairpin), (None, None), "{early:?}");
    assert_eq!(full.filtering, Some(Behaviour::AddressAndPortDependent));
    assert_eq!(full.hairpin, Some(false));
    // `discover` is the same profile.
    let again = discover(&config(server.addr, Duration::from_millis(200))).unwrap();
    assert_eq!(
        (again.mapping, again.filtering, again.hairpin),
        (full.mapping, full.filtering, full.hairpin)
    );
}
