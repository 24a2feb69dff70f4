//! `net/PROTOCOL.md` must describe exactly the messages the codec knows,
//! with their sizes and field offsets.

use otedama_net::wire::{self, INBOUND_TYPES, OUTBOUND_TYPES};

#[test]
fn every_message_is_documented_with_its_size() {
    let doc = include_str!("../PROTOCOL.md");
    let mut seen = Vec::new();
    for line in doc.lines() {
        let Some(rest) = line.strip_prefix("### `0x") else { continue };
        let ty = u16::from_str_radix(&rest[..4], 16).unwrap();
        let inbound = line.contains("client → server");
        let body: usize = line.split("body ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        let want = if inbound { wire::inbound_body_len(ty) } else { wire::outbound_body_len(ty) };
        assert_eq!(want, Some(body), "{line}");
        seen.push((ty, inbound));
    }
    for &t in INBOUND_TYPES {
        assert!(seen.contains(&(t, true)), "inbound {t:#06x} is not documented");
    }
    for &t in OUTBOUND_TYPES {
        assert!(seen.contains(&(t, false)), "outbound {t:#06x} is not documented");
    }
    assert_eq!(seen.len(), INBOUND_TYPES.len() + OUTBOUND_TYPES.len());
}

#[test]
fn documented_offsets_match_the_encoder() {
    // Spot-check the widest message byte by byte against its table rows.
    let m = wire::Executed {
        seq: 1,
        ts: 2,
        client_seq: 3,
        match_id: 4,
        order: 5,
        account: 6,
        maker: 7,
        reserved: [0; 3],
        price: 8,
        qty: 9,
        fee: -10,
        leaves: 11,
    };
    let mut b = Vec::new();
    m.push(&mut b);
    let doc = include_str!("../PROTOCOL.md");
    let table = doc.split("### `0x8106` Executed").nth(1).unwrap().split("###").next().unwrap();
    for row in table.lines().filter(|l| l.starts_with("| ") && l.contains('`')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (off, size, name) = (cells[1].parse::<usize>().unwrap(), cells[2].parse::<usize>().unwrap(), cells[3].trim_matches('`'));
        let mut v = [0u8; 8];
        v[..size.min(8)].copy_from_slice(&b[off..off + size.min(8)]);
        let got = i64::from_le_bytes(v);
        let want = match name {
            "seq" => 1,
            "ts" => 2,
            "client_seq" => 3,
            "match_id" => 4,
            "order" => 5,
            "account" => 6,
            "maker" => 7,
            "reserved" => 0,
            "price" => 8,
            "qty" => 9,
            "fee" => -10,
            "leaves" => 11,
            other => panic!("unexpected field {other}"),
        };
        assert_eq!(got, want, "field {name} at offset {off}");
    }
    assert_eq!(u16::from_le_bytes([b[0], b[1]]) as usize, b.len() - 2);
}
