"""Replay buffers: FIFO and reservoir transitions, sequence windows with masks, padding and burn-in."""

import numpy as np
import pytest
import torch

from agents.replay import SequenceReplay, TransitionReplay


def fill_episodes(replay, lengths, obs_dim=3, task=0):
    """Episodes whose observations encode (episode, step): obs = [episode, t, 1]."""
    for episode, length in enumerate(lengths):
        for t in range(length):
            obs = np.array([episode, t, 1.0][:obs_dim], dtype=np.float32)
            next_obs = np.array([episode, t + 1, 1.0][:obs_dim], dtype=np.float32)
            last = t == length - 1
            replay.add(obs, np.full(2, 10 * episode + t), float(100 * episode + t), next_obs,
                       terminated=last and episode % 2 == 0, truncated=last and episode % 2 == 1, task=task)


def test_fifo_keeps_the_newest_steps():
    replay = TransitionReplay(capacity=4, obs_dim=1, action_dim=1, seed=0)
    for t in range(10):
        replay.add(np.array([t]), np.zeros(1), float(t), np.array([t + 1]), False, False, task=0)
    assert len(replay) == 4
    assert sorted(replay.reward.tolist()) == [6.0, 7.0, 8.0, 9.0]
    batch = replay.sample(32)
    assert batch.obs.shape == (32, 2, 1) and batch.action.shape == (32, 1, 1) and batch.mask.shape == (32, 1)
    assert torch.equal(batch.obs[:, 1, 0], batch.obs[:, 0, 0] + 1)  # next observation
    assert torch.all(batch.mask == 1) and batch.prev_action is None


def test_reservoir_keeps_a_uniform_sample_of_everything_offered():
    kept_early = []
    for seed in range(20):
        replay = TransitionReplay(capacity=200, obs_dim=1, action_dim=1, mode="reservoir", seed=seed)
        for t in range(2000):
            replay.add(np.array([t]), np.zeros(1), float(t), np.array([t]), False, False, task=0)
        assert len(replay) == 200 and replay.seen == 2000
        kept_early.append(np.mean(replay.reward < 1000))
    assert abs(np.mean(kept_early) - 0.5) < 0.03  # FIFO would give 0.0


def test_clear_empties_the_buffer():
    replay = SequenceReplay(capacity=50, obs_dim=3, action_dim=2, seq_len=4, seed=0)
    fill_episodes(replay, [5, 5])
    replay.clear()
    assert len(replay) == 0
    with pytest.raises(ValueError, match="empty"):
        replay.sample(2)


def test_sequence_windows_stay_in_one_episode_with_masks_and_padding():
    replay = SequenceReplay(capacity=1000, obs_dim=3, action_dim=2, seq_len=4, seed=1)
    lengths = [3, 7, 1, 6, 2]
    fill_episodes(replay, lengths)
    batch = replay.sample(500)
    assert batch.obs.shape == (500, 5, 3) and batch.mask.shape == (500, 4)
    for row in range(500):
        valid = int(batch.mask[row].sum())
        assert 1 <= valid <= 4
        assert torch.all(batch.mask[row, :valid] == 1) and torch.all(batch.mask[row, valid:] == 0)
        episode = int(batch.obs[row, 0, 0])
        t0 = int(batch.obs[row, 0, 1])
        # Consecutive steps of one episode, then the next observation of the last one.
        assert batch.obs[row, : valid + 1, 0].tolist() == [episode] * (valid + 1)
        assert batch.obs[row, : valid + 1, 1].tolist() == list(range(t0, t0 + valid + 1))
        assert t0 + valid <= lengths[episode]
        # Padding is zero.
        assert torch.all(batch.obs[row, valid + 1 :] == 0) and torch.all(batch.reward[row, valid:] == 0)
        # Actions and rewards line up with the observations; prev_* are shifted by one.
        assert batch.reward[row, :valid].tolist() == [100 * episode + t for t in range(t0, t0 + valid)]
        assert batch.prev_action[row, 1 : valid + 1, 0].tolist() == [10 * episode + t for t in range(t0, t0 + valid)]
        expected_prev = 0.0 if t0 == 0 else float(10 * episode + t0 - 1)
        assert batch.prev_action[row, 0, 0].item() == expected_prev
        # Only a true termination stops bootstrapping (odd episodes end truncated).
        last_of_episode = t0 + valid == lengths[episode]
        assert batch.terminated[row, valid - 1].item() == float(last_of_episode and episode % 2 == 0)


def test_sequence_windows_are_aligned_chunks_with_burn_in():
    """Windows are the chunks [0, 2), [2, 4)... of an episode; an integer burn-in gives a
    prefix of at most that many steps before the window, right-aligned."""
    replay = SequenceReplay(capacity=1000, obs_dim=3, action_dim=2, seq_len=2, burn_in=3, seed=2)
    fill_episodes(replay, [8, 4])
    batch = replay.sample(300)
    assert batch.obs.shape == (300, 3, 3) and batch.mask.shape == (300, 2) and batch.prefix_steps == 3
    for row in range(300):
        episode, start_t = int(batch.obs[row, 0, 0]), int(batch.obs[row, 0, 1])
        assert start_t % 2 == 0  # aligned chunks
        real = int(batch.prefix_mask[row].sum())
        assert real == min(start_t, 3)  # as much burn-in as the episode has, at most 3 steps
        assert torch.all(batch.prefix_mask[row, 3 - real :] == 1) and torch.all(batch.prefix_mask[row, : 3 - real] == 0)
        assert batch.prefix_obs[row, 3 - real :, 1].tolist() == list(range(start_t - real, start_t))
        assert torch.all(batch.prefix_obs[row, 3 - real :, 0] == episode)
        # The previous action of each prefix step is the action before it (zero at the episode start).
        expected = [0.0 if t == 0 else float(10 * episode + t - 1) for t in range(start_t - real, start_t)]
        assert batch.prefix_prev_action[row, 3 - real :, 0].tolist() == expected


def test_default_prefix_reaches_back_to_the_episode_start():
    """burn_in=None: the prefix is the whole episode before the window, however long."""
    replay = SequenceReplay(capacity=1000, obs_dim=3, action_dim=2, seq_len=3, seed=5)
    fill_episodes(replay, [11, 2])
    batch = replay.sample(200)
    assert batch.prefix_steps == 9  # the chunk [9, 11) has 9 steps before it
    for row in range(200):
        start_t = int(batch.obs[row, 0, 1])
        assert int(batch.prefix_mask[row].sum()) == start_t
        if start_t:
            assert batch.prefix_obs[row, -start_t:, 1].tolist() == list(range(start_t))
            assert batch.prev_action[row, 0, 0].item() == float(10 * int(batch.obs[row, 0, 0]) + start_t - 1)


def test_bad_window_settings_are_refused():
    for seq_len, burn_in in ((0, None), (-3, 0), (2.5, None), (4, -1), (4, 1.5)):
        with pytest.raises(ValueError, match="seq_len|burn_in"):
            SequenceReplay(100, 3, 2, seq_len=seq_len, burn_in=burn_in)


def test_short_episodes_are_replayed_whole_from_their_start():
    replay = SequenceReplay(capacity=1000, obs_dim=3, action_dim=2, seq_len=8, seed=4)
    fill_episodes(replay, [7, 5, 8, 3])
    batch = replay.sample(100)
    assert torch.all(batch.obs[:, 0, 1] == 0)  # every window starts at its episode's first step
    assert torch.all(batch.prev_action[:, 0] == 0)


def test_sequence_replay_survives_wrap_around():
    replay = SequenceReplay(capacity=10, obs_dim=3, action_dim=2, seq_len=4, seed=3)
    fill_episodes(replay, [6, 6, 5])  # 17 steps into 10 slots: the oldest episode is partly gone
    assert len(replay) == 10
    batch = replay.sample(200)
    for row in range(200):
        valid = int(batch.mask[row].sum())
        episode, t0 = int(batch.obs[row, 0, 0]), int(batch.obs[row, 0, 1])
        assert episode in (1, 2)  # episode 0 is overwritten
        assert batch.obs[row, : valid + 1, 1].tolist() == list(range(t0, t0 + valid + 1))
    # Slots hold steps 7..16: episode 1 lost its first step, so windows start at step 1 or later.
    assert int(batch.obs[batch.obs[:, 0, 0] == 1][:, 0, 1].min()) == 1


def test_state_dict_round_trip_gives_the_same_samples():
    for replay in (TransitionReplay(100, 3, 2, seed=0), SequenceReplay(100, 3, 2, seq_len=3, burn_in=1, seed=0)):
        fill_episodes(replay, [4, 9, 2])
        copy = type(replay)(100, 3, 2, **({"seq_len": 3, "burn_in": 1} if replay.sequence else {}), seed=123)
        copy.load_state_dict(replay.state_dict())
        a, b = replay.sample(16), copy.sample(16)
        assert all(torch.equal(x, y) for x, y in zip(
            (a.obs, a.action, a.reward, a.mask), (b.obs, b.action, b.reward, b.mask)))
        fill_episodes(replay, [3]), fill_episodes(copy, [3])
        assert torch.equal(replay.sample(8).obs, copy.sample(8).obs)


def test_state_dict_of_another_buffer_is_refused():
    replay = TransitionReplay(100, 3, 2)
    with pytest.raises(ValueError, match="capacity"):
        TransitionReplay(50, 3, 2).load_state_dict(replay.state_dict())
    with pytest.raises(ValueError, match="reservoir|fifo"):
        SequenceReplay(100, 3, 2, seq_len=2, mode="reservoir")
