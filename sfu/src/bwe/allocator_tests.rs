use super::*;

/// Three simulcast layers at about 150, 500 and 1,500 kbit/s.
fn camera(track: TrackId, max_layer: Option<usize>, priority: Priority) -> VideoDemand {
    VideoDemand {
        track,
        layer_bps: vec![150_000, 500_000, 1_500_000],
        max_layer,
        priority,
        floor: 0,
    }
}

fn targets(a: &Allocation) -> Vec<Target> {
    a.targets.iter().map(|(_, t)| *t).collect()
}

const AUDIO: u64 = 40_000;

#[test]
fn plenty_gives_every_tile_the_layer_it_needs() {
    let mut alloc = StreamAllocator::default();
    let videos = [
        camera(1, Some(2), Priority::Normal),
        // A thumbnail: the middle layer is enough.
        camera(2, Some(1), Priority::Normal),
        camera(3, None, Priority::Normal),
    ];
    let a = alloc.allocate(10_000_000, AUDIO, &videos, Instant::now());
    assert_eq!(
        targets(&a),
        vec![Target::Layer(2), Target::Layer(1), Target::Paused]
    );
    assert_eq!(a.probe_bps, None);
    assert_eq!(a.allocated_bps, 2_000_000 + AUDIO);
}

#[test]
fn lowest_layers_first_then_upgrades_by_priority() {
    let mut alloc = StreamAllocator::default();
    let videos = [
        camera(1, Some(2), Priority::Normal),
        camera(2, Some(2), Priority::ScreenShare),
        camera(3, Some(2), Priority::ActiveSpeaker),
        camera(4, Some(2), Priority::Normal),
    ];
    // 2.2 Mbit/s: four lowest layers (600k), then the screen share to its
    // top (+1,350k), then the speaker one step (+350k) fits 2.05M budget.
    let a = alloc.allocate(2_200_000, AUDIO, &videos, Instant::now());
    assert_eq!(
        targets(&a),
        vec![
            Target::Layer(0),
            Target::Layer(2),
            Target::Layer(0),
            Target::Layer(0)
        ]
    );
    assert!(a.allocated_bps <= 2_200_000);
    // Short of the speaker's next layer: probe for it.
    assert!(a.probe_bps.unwrap() > 2_200_000, "{:?}", a.probe_bps);
}

#[test]
fn equal_priorities_upgrade_in_turn() {
    let mut alloc = StreamAllocator::default();
    let videos = [
        camera(1, Some(2), Priority::Normal),
        camera(2, Some(2), Priority::Normal),
    ];
    let a = alloc.allocate(1_200_000, AUDIO, &videos, Instant::now());
    assert_eq!(targets(&a), vec![Target::Layer(1), Target::Layer(1)]);
}

#[test]
fn video_is_paused_lowest_priority_first_when_even_the_lowest_layer_does_not_fit() {
    let mut alloc = StreamAllocator::default();
    let videos = [
        camera(1, Some(2), Priority::Normal),
        camera(2, Some(2), Priority::ActiveSpeaker),
    ];
    let a = alloc.allocate(250_000, AUDIO, &videos, Instant::now());
    assert_eq!(targets(&a), vec![Target::Paused, Target::Layer(0)]);
    // Below even audio's share: no video at all (audio is not ours to cut).
    let a = alloc.allocate(50_000, AUDIO, &videos, Instant::now());
    assert_eq!(targets(&a), vec![Target::Paused, Target::Paused]);
    assert_eq!(a.allocated_bps, AUDIO);
    assert!(a.probe_bps.is_some());
}

#[test]
fn downgrades_after_a_second_short_at_once_on_a_cut_and_climbs_only_with_headroom_after_a_hold() {
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut alloc = StreamAllocator::default();
    let videos = [camera(1, Some(2), Priority::Normal)];
    let a = alloc.allocate(2_000_000, AUDIO, &videos, t0);
    assert_eq!(targets(&a), vec![Target::Layer(2)]);
    // The estimate dips below the top layer's need (a noisy overuse
    // verdict): kept for a second, then down if it stays short.
    let a = alloc.allocate(1_200_000, AUDIO, &videos, ms(100));
    assert_eq!(targets(&a), vec![Target::Layer(2)]);
    let a = alloc.allocate(1_600_000, AUDIO, &videos, ms(600));
    assert_eq!(targets(&a), vec![Target::Layer(2)], "back in time: kept");
    let a = alloc.allocate(1_200_000, AUDIO, &videos, ms(700));
    assert_eq!(targets(&a), vec![Target::Layer(2)]);
    let a = alloc.allocate(1_200_000, AUDIO, &videos, ms(1600));
    assert_eq!(targets(&a), vec![Target::Layer(2)]);
    let a = alloc.allocate(1_200_000, AUDIO, &videos, ms(1700));
    assert_eq!(targets(&a), vec![Target::Layer(1)]);
    // A cut (the layers need more than 1.5 times the estimate): at once.
    let mut cut = StreamAllocator::default();
    cut.allocate(2_000_000, AUDIO, &videos, t0);
    let a = cut.allocate(500_000, AUDIO, &videos, ms(100));
    assert_eq!(targets(&a), vec![Target::Layer(0)]);
    // Back above the top layer's need but within the headroom: stays.
    let a = alloc.allocate(1_700_000, AUDIO, &videos, t0 + Duration::from_secs(10));
    assert_eq!(targets(&a), vec![Target::Layer(1)]);
    // With headroom, but inside the hold after the downgrade: stays.
    let t1 = t0 + Duration::from_secs(20);
    let a = alloc.allocate(300_000, AUDIO, &videos, t1);
    assert_eq!(targets(&a), vec![Target::Layer(0)]);
    let a = alloc.allocate(2_500_000, AUDIO, &videos, t1 + Duration::from_secs(1));
    assert_eq!(targets(&a), vec![Target::Layer(0)]);
    let a = alloc.allocate(2_500_000, AUDIO, &videos, t1 + Duration::from_secs(5));
    assert_eq!(targets(&a), vec![Target::Layer(2)]);
}

#[test]
fn a_noisy_estimate_around_a_layer_boundary_does_not_flap() {
    let t0 = Instant::now();
    let mut alloc = StreamAllocator::default();
    let videos = [camera(1, Some(2), Priority::Normal)];
    alloc.allocate(1_000_000, AUDIO, &videos, t0);
    let mut changes = 0;
    let mut last = None;
    for i in 0..100u64 {
        // ±10 % around 1.7 Mbit/s, a new value every 100 ms.
        let estimate = if i % 2 == 0 { 1_870_000 } else { 1_530_000 };
        let a = alloc.allocate(
            estimate,
            AUDIO,
            &videos,
            t0 + Duration::from_millis(100 * i),
        );
        if last.is_some_and(|l| l != a.targets[0].1) {
            changes += 1;
        }
        last = Some(a.targets[0].1);
    }
    assert!(changes <= 1, "{changes} layer changes");
}

#[test]
fn layers_not_arriving_are_skipped_and_gone_tracks_forgotten() {
    let mut alloc = StreamAllocator::default();
    let mut video = camera(7, Some(2), Priority::Normal);
    // The publisher's top layer stopped (its own link, or paused upstream).
    video.layer_bps[2] = 0;
    let a = alloc.allocate(
        10_000_000,
        AUDIO,
        std::slice::from_ref(&video),
        Instant::now(),
    );
    assert_eq!(targets(&a), vec![Target::Layer(1)]);
    let a = alloc.allocate(10_000_000, AUDIO, &[], Instant::now());
    assert!(a.targets.is_empty());
    assert!(alloc.tracks.is_empty());
}

#[test]
fn a_higher_layer_measured_below_a_lower_one_costs_nothing_extra() {
    let mut alloc = StreamAllocator::default();
    // The top layer just started: its rate so far is below the middle one's.
    let video = VideoDemand {
        track: 1,
        layer_bps: vec![150_000, 500_000, 300_000],
        max_layer: Some(2),
        priority: Priority::Normal,
        floor: 0,
    };
    let a = alloc.allocate(700_000, AUDIO, &[video], Instant::now());
    assert_eq!(targets(&a), vec![Target::Layer(2)]);
    assert_eq!(a.allocated_bps, 500_000 + AUDIO);
}

#[test]
fn a_hidden_tile_shown_again_resumes_at_once() {
    let mut alloc = StreamAllocator::default();
    let t0 = Instant::now();
    let shown = [camera(1, Some(2), Priority::Normal)];
    let hidden = [camera(1, None, Priority::Normal)];
    assert_eq!(
        targets(&alloc.allocate(3_000_000, AUDIO, &shown, t0)),
        vec![Target::Layer(2)]
    );
    let t1 = t0 + Duration::from_millis(100);
    assert_eq!(
        targets(&alloc.allocate(3_000_000, AUDIO, &hidden, t1)),
        vec![Target::Paused]
    );
    // Shown again 100 ms later: no hold, it was not a bandwidth downgrade.
    let t2 = t1 + Duration::from_millis(100);
    assert_eq!(
        targets(&alloc.allocate(3_000_000, AUDIO, &shown, t2)),
        vec![Target::Layer(2)]
    );
}

#[test]
fn a_downgrade_for_bandwidth_still_holds() {
    let mut alloc = StreamAllocator::default();
    let t0 = Instant::now();
    let videos = [camera(1, Some(2), Priority::Normal)];
    assert_eq!(
        targets(&alloc.allocate(3_000_000, AUDIO, &videos, t0)),
        vec![Target::Layer(2)]
    );
    // The estimate collapses: down at once (beyond the cut).
    let t1 = t0 + Duration::from_millis(100);
    assert_eq!(
        targets(&alloc.allocate(400_000, AUDIO, &videos, t1)),
        vec![Target::Layer(0)]
    );
    // It recovers 1 s later: held down.
    let t2 = t1 + Duration::from_secs(1);
    assert_eq!(
        targets(&alloc.allocate(3_000_000, AUDIO, &videos, t2)),
        vec![Target::Layer(0)]
    );
    let t3 = t1 + UPGRADE_HOLD;
    assert_eq!(
        targets(&alloc.allocate(3_000_000, AUDIO, &videos, t3)),
        vec![Target::Layer(2)]
    );
}

#[test]
fn a_link_kept_to_lowest_layers_pauses_no_shown_video_but_does_not_resume_a_paused_one() {
    let mut alloc = StreamAllocator {
        keep_lowest_layers: true,
        ..Default::default()
    };
    // One encoding of 1 Mbit/s, the initial 300 kbit/s estimate.
    let single = VideoDemand {
        track: 1,
        layer_bps: vec![1_000_000],
        max_layer: Some(0),
        priority: Priority::Normal,
        floor: 0,
    };
    let hidden = camera(2, None, Priority::Normal);
    let a = alloc.allocate(
        300_000,
        AUDIO,
        &[single.clone(), hidden.clone()],
        Instant::now(),
    );
    assert_eq!(targets(&a), vec![Target::Layer(0), Target::Paused]);
    // Once the link has shown it cannot deliver, the estimate is believed.
    alloc.keep_lowest_layers = false;
    let a = alloc.allocate(
        300_000,
        AUDIO,
        &[single.clone(), hidden.clone()],
        Instant::now() + Duration::from_secs(2),
    );
    assert_eq!(targets(&a), vec![Target::Paused, Target::Paused]);
    // A paused video stays paused when the link delivers again: it comes
    // back when the estimate has room for it.
    alloc.keep_lowest_layers = true;
    let a = alloc.allocate(
        300_000,
        AUDIO,
        &[single.clone(), hidden.clone()],
        Instant::now() + Duration::from_secs(3),
    );
    assert_eq!(targets(&a), vec![Target::Paused, Target::Paused]);
    let a = alloc.allocate(
        1_400_000,
        AUDIO,
        &[single, hidden],
        Instant::now() + Duration::from_secs(3) + UPGRADE_HOLD,
    );
    assert_eq!(targets(&a), vec![Target::Layer(0), Target::Paused]);
}

#[test]
fn a_dip_on_a_link_mostly_taken_by_audio_is_no_cut() {
    // Measured (tests/browser/starved_link.test.mjs, a 160 kbit/s link):
    // the lowest encoding's base layer at 55 kbit/s, with TL1 90, audio
    // 48. The estimate dips from 140 to 107 kbit/s (0.85x what was
    // delivered, one overuse verdict): the video's 90 against the 59 that
    // audio leaves is over 1.5x, but the whole allocation (138) is 1.29x
    // the estimate. Kept for a second, then down a step, not paused.
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let audio = 48_000;
    let video = [VideoDemand {
        track: 1,
        layer_bps: vec![55_000, 90_000, 155_000],
        max_layer: Some(2),
        priority: Priority::Normal,
        floor: 0,
    }];
    let mut alloc = StreamAllocator::default();
    let a = alloc.allocate(160_000, audio, &video, t0);
    assert_eq!(targets(&a), vec![Target::Layer(1)]);
    let a = alloc.allocate(107_000, audio, &video, ms(100));
    assert_eq!(targets(&a), vec![Target::Layer(1)], "a dip: kept");
    let a = alloc.allocate(107_000, audio, &video, ms(1200));
    assert_eq!(targets(&a), vec![Target::Layer(0)], "short for a second");
    // A real cut (70 kbit/s: audio alone nearly fills it) pauses at once.
    let mut cut = StreamAllocator::default();
    cut.allocate(160_000, audio, &video, t0);
    let a = cut.allocate(56_000, audio, &video, ms(100));
    assert_eq!(targets(&a), vec![Target::Paused]);
}
