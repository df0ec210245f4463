//! The index's merge rules, segment by segment and at once, and what compaction keeps.

use super::*;

fn loc(pack: u8, offset: u32, damaged: bool) -> Loc {
    Loc {
        pack: PackId([pack; 32]),
        offset,
        len: 10,
        raw_len: 5,
        kind: BlobKind::Data,
        damaged,
    }
}

/// A segment's plaintext, as written.
fn plain(s: Segment) -> Vec<u8> {
    let mut wire = s.wire;
    wire.v = SEGMENT_VERSION;
    postcard::to_allocvec(&wire).unwrap()
}

fn apply(ix: &mut AccountIndex, s: Segment) {
    ix.apply_plain(&plain(s), "test", 1).unwrap();
    ix.settle();
}

#[test]
fn damage_sticks_to_its_location_and_a_sound_copy_wins() {
    let id = BlobId([9; 32]);
    let mut ix = AccountIndex::default();
    let seg = |entries: Vec<Loc>, dropped: Vec<u8>| {
        let mut s = Segment::default();
        for l in entries {
            s.add(id, l);
        }
        for p in dropped {
            s.drop_pack(PackId([p; 32]));
        }
        s
    };
    apply(&mut ix, seg(vec![loc(1, 8, false)], vec![]));
    assert!(ix.has_sound(&id, BlobKind::Data));
    assert!(!ix.has_sound(&id, BlobKind::Tree));
    apply(&mut ix, seg(vec![loc(1, 8, true)], vec![]));
    assert!(!ix.has_sound(&id, BlobKind::Data));
    // A later segment that still lists the damaged location does not heal it.
    apply(&mut ix, seg(vec![loc(1, 8, false)], vec![]));
    assert!(!ix.has_sound(&id, BlobKind::Data));
    // A new copy elsewhere does.
    apply(&mut ix, seg(vec![loc(2, 8, false)], vec![]));
    assert_eq!(ix.get(&id, BlobKind::Data).unwrap().pack, PackId([2; 32]));
    assert!(ix.has_sound(&id, BlobKind::Data));
    // A damage mark on the old location no longer matters.
    apply(&mut ix, seg(vec![loc(1, 8, true)], vec![]));
    assert!(ix.has_sound(&id, BlobKind::Data));
    // Dropping the pack forgets the blob.
    apply(&mut ix, seg(vec![], vec![2]));
    assert!(ix.get(&id, BlobKind::Data).is_none());
}

/// Merging many segments at once (one sort) gives what applying them one by one
/// does, drops included; and the parts a compaction writes load back the same.
#[test]
fn merging_at_once_equals_applying_in_order_and_parts_load_back() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let segs: Vec<Vec<u8>> = (0..12)
        .map(|i| {
            let mut s = Segment::default();
            for _ in 0..400 {
                let id = BlobId([next(60) as u8; 32]);
                let l = loc(next(4) as u8, next(3) as u32 * 8, next(5) == 0);
                s.add(id, l);
            }
            if i == 6 {
                s.drop_pack(PackId([1; 32]));
            }
            plain(s)
        })
        .collect();
    let mut one_by_one = AccountIndex::default();
    for s in &segs {
        one_by_one.apply_plain(s, "t", 1).unwrap();
        one_by_one.settle();
    }
    let mut at_once = AccountIndex::default();
    for s in &segs {
        at_once.apply_plain(s, "t", 1).unwrap();
    }
    at_once.settle();
    let all = |ix: &AccountIndex| ix.iter().collect::<Vec<_>>();
    assert_eq!(all(&one_by_one), all(&at_once));
    assert!(at_once.len() > 30, "{}", at_once.len());

    let mut reloaded = AccountIndex::default();
    for part in Segment::parts_of(&at_once) {
        reloaded.apply_plain(&plain(part), "t", 1).unwrap();
    }
    reloaded.settle();
    assert_eq!(all(&reloaded), all(&at_once));
}

#[test]
fn a_segment_that_names_an_unlisted_pack_or_is_cut_short_is_damage() {
    let mut s = Segment::default();
    s.add(BlobId([1; 32]), loc(1, 8, false));
    let mut bytes = plain(s);
    let mut ix = AccountIndex::default();
    assert!(ix
        .apply_plain(&bytes[..bytes.len() - 3], "t", 1)
        .unwrap_err()
        .is_damage());
    // The entry's pack number (after the pack's date, the entry's id and kind) points
    // past the one pack listed.
    let at = 1 + 1 + 32 + 2 + 1 + 32 + 1;
    bytes[at] = 7;
    let mut ix = AccountIndex::default();
    assert!(ix.apply_plain(&bytes, "t", 1).unwrap_err().is_damage());
}

#[test]
fn verdicts_on_packs_merge_and_survive_compaction() {
    let a = BlobId([1; 32]);
    let b = BlobId([2; 32]);
    let (p1, p2) = (PackId([1; 32]), PackId([2; 32]));
    let mut ix = AccountIndex::default();
    let mut s = Segment::default();
    s.add(a, loc(1, 8, false));
    s.add(b, loc(2, 8, false));
    ix.apply_plain(&plain(s), "t", 1_000).unwrap();
    ix.settle();
    assert_eq!(ix.born(&p1), Some(1_000));

    // Condemned: still readable, never reused.
    let c = Condemned {
        at: 2_000,
        not_before: 3_000,
    };
    let mut s = Segment::default();
    s.condemn(p1, c);
    s.condemn(p2, c);
    apply(&mut ix, s);
    assert!(ix.get(&a, BlobKind::Data).is_some());
    assert!(!ix.has_sound(&a, BlobKind::Data));
    assert_eq!(ix.condemned(&p1), Some(c));

    // Revived: reusable again. Dropped: forgotten for good.
    let mut s = Segment::default();
    s.revive(p2);
    s.drop_pack(p1);
    apply(&mut ix, s);
    assert!(ix.has_sound(&b, BlobKind::Data));
    assert!(ix.get(&a, BlobKind::Data).is_none());
    assert!(ix.is_dropped(&p1));
    assert_eq!(ix.condemned(&p1), None);

    // A compaction keeps the dates and the drop: an older compaction's locations in
    // the dropped pack, merged before it, do not come back.
    let parts: Vec<Vec<u8>> = Segment::parts_of(&ix).map(plain).collect();
    let mut again = AccountIndex::default();
    let mut stale = Segment::default();
    stale.add(a, loc(1, 8, false));
    again.apply_plain(&plain(stale), "t", 1_500).unwrap();
    for p in &parts {
        again.apply_plain(p, "t", 9_000).unwrap();
    }
    again.settle();
    assert!(again.get(&a, BlobKind::Data).is_none());
    assert!(again.has_sound(&b, BlobKind::Data));
    assert_eq!(again.born(&p2), Some(1_000));
    // A damage mark written late for a dropped pack changes nothing.
    let mut late = Segment::default();
    late.add(a, loc(1, 8, true));
    apply(&mut again, late);
    assert!(again.get(&a, BlobKind::Data).is_none());
}
