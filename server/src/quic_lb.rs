//! Connection ids a QUIC-LB load balancer can route (draft-ietf-quic-load-balancers-21, the
//! keyless "plaintext" configuration): with `[cluster] server_id` set, every connection id this
//! server issues is
//!
//! ```text
//! First Octet { Config Rotation (3), CID Len (5) }  Server ID (1..15 octets)  Nonce (>= 4 octets)
//! ```
//!
//! so a load balancer that knows the server ids reads octets 1..=len of a packet's destination
//! connection id and sends it to this node, whatever the client's address (NAT rebinding,
//! migration from Wi-Fi to LTE). The five low bits self-describe the length of what follows the
//! first octet (§3.3), the nonce is random (§5.3: it must appear so; 32+ random bits make a repeat
//! negligible), and config rotation 0b111, the draft's "unroutable" codepoint, is refused.
//!
//! Plaintext ids make the server visible to observers of the connection ids (the draft's privacy
//! caveat); the encrypted configurations are future work. Ids stay valid across restarts (the
//! server id is configuration), so the `validate` check quinn runs before a stateless reset accepts
//! a restarted node's old ids just as the keyed generator does without a cluster.

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

/// Longest connection id QUIC v1 allows.
const MAX_CID_LEN: usize = 20;
/// Shortest nonce the draft allows.
pub const MIN_NONCE_LEN: usize = 4;

/// `[cluster]`: this node's place behind a QUIC-LB load balancer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's server id as hex, 1 to 15 octets (`"01"`, `"a1b2"`); every node behind one
    /// load balancer has its own, of the same length. Unset: ordinary (unroutable) ids.
    pub server_id: Option<String>,
    /// The config rotation codepoint the load balancer's configuration uses (0 to 6).
    pub config_rotation: u8,
    /// Nonce octets after the server id (at least 4; server id + nonce at most 19). Default: 8,
    /// or what is left beside a longer server id.
    pub nonce_len: Option<usize>,
}

impl ClusterConfig {
    /// The generator's parameters, or why the section is wrong; `None` without a server id.
    pub fn parse(&self) -> Result<Option<QuicLb>, String> {
        let Some(hex_id) = &self.server_id else {
            return Ok(None);
        };
        let server_id =
            hex::decode(hex_id.trim()).map_err(|e| format!("cluster.server_id is not hex: {e}"))?;
        if !(1..=15).contains(&server_id.len()) {
            return Err("cluster.server_id must be 1 to 15 octets".into());
        }
        if self.config_rotation > 6 {
            return Err("cluster.config_rotation must be 0 to 6 (7 means unroutable)".into());
        }
        let room = MAX_CID_LEN - 1 - server_id.len();
        let nonce_len = self.nonce_len.unwrap_or(8.min(room));
        if nonce_len < MIN_NONCE_LEN || nonce_len > room {
            return Err(format!(
                "cluster.nonce_len must be {MIN_NONCE_LEN} to {room} with this server_id"
            ));
        }
        Ok(Some(QuicLb {
            config_rotation: self.config_rotation,
            server_id,
            nonce_len,
        }))
    }
}

/// Issues QUIC-LB plaintext connection ids (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicLb {
    config_rotation: u8,
    server_id: Vec<u8>,
    nonce_len: usize,
}

impl QuicLb {
    fn first_octet(&self) -> u8 {
        // Length self-description: the octets after the first one (at most 19, fits 5 bits).
        let rest = (self.server_id.len() + self.nonce_len) as u8;
        (self.config_rotation << 5) | (rest & 0x1f)
    }

    /// What a load balancer does: the server id in `cid`, if `cid` is routable under a
    /// configuration with this rotation codepoint and server-id length.
    pub fn decode(cid: &[u8], config_rotation: u8, server_id_len: usize) -> Option<&[u8]> {
        let first = *cid.first()?;
        if first >> 5 != config_rotation || first >> 5 == 0b111 {
            return None;
        }
        if usize::from(first & 0x1f) != cid.len() - 1 {
            return None;
        }
        cid.get(1..1 + server_id_len)
    }
}

impl ConnectionIdGenerator for QuicLb {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; MAX_CID_LEN];
        let len = self.cid_len();
        bytes[0] = self.first_octet();
        bytes[1..1 + self.server_id.len()].copy_from_slice(&self.server_id);
        if SystemRandom::new()
            .fill(&mut bytes[1 + self.server_id.len()..len])
            .is_err()
        {
            // The system's random source failing is not something to serve on.
            tracing::error!("no random bytes for a connection-id nonce");
        }
        ConnectionId::new(&bytes[..len])
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        let ok = cid.len() == self.cid_len()
            && QuicLb::decode(cid, self.config_rotation, self.server_id.len())
                == Some(&self.server_id[..]);
        if ok {
            Ok(())
        } else {
            Err(InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        1 + self.server_id.len() + self.nonce_len
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(id: &str, rot: u8, nonce: Option<usize>) -> ClusterConfig {
        ClusterConfig {
            server_id: Some(id.into()),
            config_rotation: rot,
            nonce_len: nonce,
        }
    }

    #[test]
    fn ids_carry_rotation_length_server_id_and_a_random_nonce() {
        let mut lb = cfg("a1b2c3", 2, Some(6))
            .parse()
            .expect("ok")
            .expect("some");
        let a = lb.generate_cid();
        let b = lb.generate_cid();
        assert_eq!(a.len(), 10);
        // 0b010 << 5 | 9 octets after the first.
        assert_eq!(a[0], 0x49);
        assert_eq!(&a[1..4], &[0xa1, 0xb2, 0xc3]);
        assert_ne!(a[4..], b[4..], "nonces differ");
        assert_eq!(QuicLb::decode(&a, 2, 3), Some(&[0xa1, 0xb2, 0xc3][..]));
        assert!(lb.validate(&a).is_ok());
        // Another node's id, another rotation or a client-chosen id is not ours.
        let other = cfg("a1b2c4", 2, Some(6))
            .parse()
            .expect("ok")
            .expect("some");
        assert!(lb.validate(&other.clone().generate_cid()).is_err());
        assert!(lb.validate(&ConnectionId::new(&[0u8; 8])).is_err());
        assert_eq!(QuicLb::decode(&a, 3, 3), None);
    }

    #[test]
    fn the_longest_server_id_leaves_a_four_octet_nonce() {
        let mut lb = cfg(&"ab".repeat(15), 0, None)
            .parse()
            .expect("ok")
            .expect("some");
        let id = lb.generate_cid();
        assert_eq!(id.len(), 20);
        assert_eq!(id[0], 19);
    }

    #[test]
    fn bad_sections_are_refused() {
        for bad in [
            cfg("", 0, None),
            cfg("zz", 0, None),
            cfg(&"ab".repeat(16), 0, None),
            cfg("01", 7, None),
            cfg("01", 0, Some(3)),
            cfg("0102", 0, Some(18)),
        ] {
            assert!(bad.parse().is_err(), "{bad:?}");
        }
        assert_eq!(ClusterConfig::default().parse(), Ok(None));
    }
}
