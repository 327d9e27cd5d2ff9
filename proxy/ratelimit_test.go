package proxy

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate/wsmw"
)

// mustRateLimit returns NewRateLimit(cfg) or fails the test.
func mustRateLimit(t *testing.T, cfg RateLimitConfig) *RateLimit {
	t.Helper()
	rl, err := NewRateLimit(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rl
}

// inSession returns a streamed message of length n that belongs to a session with ctx.
func inSession(ctx context.Context, dir Direction, n int64) *Message {
	m := streamed(dir, wsmw.OpBinary, n)
	m.Session = &SessionInfo{Context: ctx}
	return m
}

func TestRateLimitDelay(t *testing.T) {
	tests := []struct {
		name string
		cfg  RateLimitConfig
		size int64
		n    int
		min  time.Duration // 0 means: no waiting expected
	}{
		{"messages wait for tokens", RateLimitConfig{Messages: 50, MessageBurst: 1}, 1, 6, 90 * time.Millisecond},
		{"bytes wait for tokens", RateLimitConfig{Bytes: 5000, ByteBurst: 100}, 100, 6, 90 * time.Millisecond},
		{"message over byte burst waits in steps", RateLimitConfig{Bytes: 5000, ByteBurst: 100}, 600, 1, 90 * time.Millisecond},
		{"burst passes at once", RateLimitConfig{Messages: 1, MessageBurst: 5, Bytes: 1, ByteBurst: 50}, 10, 5, 0},
		{"unlimited passes at once", RateLimitConfig{}, 1 << 20, 100, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rl := mustRateLimit(t, tt.cfg)
			start := time.Now()
			for range tt.n {
				checkVerdict(t, rl.Inspect(inSession(t.Context(), ClientToUpstream, tt.size)), Pass, 0)
			}
			elapsed := time.Since(start)
			if tt.min > 0 && elapsed < tt.min {
				t.Fatalf("%d messages took %v, want at least %v", tt.n, elapsed, tt.min)
			}
			if tt.min == 0 && elapsed > 50*time.Millisecond {
				t.Fatalf("%d messages within the burst took %v", tt.n, elapsed)
			}
		})
	}
}

func TestRateLimitClose(t *testing.T) {
	tests := []struct {
		name  string
		cfg   RateLimitConfig
		sizes []int64
		pass  int // messages that pass before the one that closes
	}{
		{"second message over message rate closes 1008", RateLimitConfig{Messages: 50, MessageBurst: 1}, []int64{1, 1}, 1},
		{"message burst passes then closes", RateLimitConfig{Messages: 1, MessageBurst: 3}, []int64{1, 1, 1, 1}, 3},
		{"bytes over byte rate close 1008", RateLimitConfig{Bytes: 1, ByteBurst: 100}, []int64{60, 40, 1}, 2},
		{"message over byte burst is charged the burst", RateLimitConfig{Bytes: 1, ByteBurst: 100}, []int64{5000, 1}, 1},
		{"message over byte burst closes on a partial bucket", RateLimitConfig{Bytes: 1, ByteBurst: 100}, []int64{1, 5000}, 1},
		{"empty messages still count as messages", RateLimitConfig{Messages: 1, MessageBurst: 1, Bytes: 1, ByteBurst: 1}, []int64{0, 0}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Mode = RateLimitClose
			rl := mustRateLimit(t, tt.cfg)
			for i, size := range tt.sizes {
				v := rl.Inspect(streamed(ClientToUpstream, wsmw.OpText, size))
				if i < tt.pass {
					checkVerdict(t, v, Pass, 0)
					continue
				}
				checkVerdict(t, v, Close, wsmw.StatusPolicyViolation)
				if v.Reason != "rate limit exceeded" {
					t.Fatalf("reason = %q", v.Reason)
				}
				return
			}
			t.Fatal("no message was refused")
		})
	}
}

func TestRateLimitDirectionsAreIndependent(t *testing.T) {
	rl := mustRateLimit(t, RateLimitConfig{Messages: 1, MessageBurst: 1, Mode: RateLimitClose})
	checkVerdict(t, rl.Inspect(streamed(ClientToUpstream, wsmw.OpText, 1)), Pass, 0)
	checkVerdict(t, rl.Inspect(streamed(UpstreamToClient, wsmw.OpText, 1)), Pass, 0)
	checkVerdict(t, rl.Inspect(streamed(ClientToUpstream, wsmw.OpText, 1)), Close, wsmw.StatusPolicyViolation)
	checkVerdict(t, rl.Inspect(streamed(UpstreamToClient, wsmw.OpText, 1)), Close, wsmw.StatusPolicyViolation)
}

func TestRateLimitDelayStopsWhenSessionEnds(t *testing.T) {
	t.Run("cancelled context", func(t *testing.T) {
		rl := mustRateLimit(t, RateLimitConfig{Messages: 1, MessageBurst: 1})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		checkVerdict(t, rl.Inspect(inSession(ctx, ClientToUpstream, 1)), Pass, 0) // empties the bucket
		time.AfterFunc(20*time.Millisecond, cancel)
		start := time.Now()
		checkVerdict(t, rl.Inspect(inSession(ctx, ClientToUpstream, 1)), Pass, 0)
		if elapsed := time.Since(start); elapsed < 15*time.Millisecond || elapsed > 150*time.Millisecond {
			t.Fatalf("Inspect returned after %v, want about 20ms", elapsed)
		}
	})
	t.Run("cancelled during byte steps", func(t *testing.T) {
		rl := mustRateLimit(t, RateLimitConfig{Bytes: 10, ByteBurst: 10})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		time.AfterFunc(20*time.Millisecond, cancel)
		start := time.Now()
		checkVerdict(t, rl.Inspect(inSession(ctx, ClientToUpstream, 1000)), Pass, 0) // 99s of steps
		if elapsed := time.Since(start); elapsed > 150*time.Millisecond {
			t.Fatalf("Inspect returned after %v, want about 20ms", elapsed)
		}
	})
	t.Run("deadline before the tokens", func(t *testing.T) {
		rl := mustRateLimit(t, RateLimitConfig{Messages: 1, MessageBurst: 1})
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
		defer cancel()
		checkVerdict(t, rl.Inspect(inSession(ctx, ClientToUpstream, 1)), Pass, 0)
		start := time.Now()
		checkVerdict(t, rl.Inspect(inSession(ctx, ClientToUpstream, 1)), Pass, 0)
		if elapsed := time.Since(start); elapsed < 20*time.Millisecond || elapsed > 150*time.Millisecond {
			t.Fatalf("Inspect returned after %v, want at the 30ms deadline", elapsed)
		}
	})
}

func TestChainForSessionRateLimit(t *testing.T) {
	rl := mustRateLimit(t, RateLimitConfig{Messages: 1, MessageBurst: 2, Mode: RateLimitClose})
	base := Chain{SizeLimit{Max: 100}, rl}
	s1, s2 := base.forSession(&SessionInfo{ID: 1}), base.forSession(&SessionInfo{ID: 2})
	if s1[1] == Inspector(rl) || s2[1] == Inspector(rl) || s1[1] == s2[1] {
		t.Fatal("forSession did not give each session its own RateLimit")
	}
	if base[1] != Inspector(rl) {
		t.Fatal("forSession changed the shared chain")
	}
	for _, c := range []Chain{s1, s2} {
		for range 2 {
			checkVerdict(t, c.Inspect(streamed(ClientToUpstream, wsmw.OpText, 1)), Pass, 0)
		}
		checkVerdict(t, c.Inspect(streamed(ClientToUpstream, wsmw.OpText, 1)), Close, wsmw.StatusPolicyViolation)
	}
	// The shared value was not charged by the sessions.
	checkVerdict(t, rl.Inspect(streamed(ClientToUpstream, wsmw.OpText, 1)), Pass, 0)

	t.Run("chain without session inspectors is reused", func(t *testing.T) {
		c := Chain{SizeLimit{Max: 1}, ValidateJSON{}}
		if got := c.forSession(&SessionInfo{}); &got[0] != &c[0] {
			t.Fatal("forSession copied a chain without per-session state")
		}
	})
	t.Run("shared is one budget for all sessions", func(t *testing.T) {
		g := mustRateLimit(t, RateLimitConfig{Messages: 1, MessageBurst: 1, Mode: RateLimitClose})
		base := Chain{g.Shared()}
		s1, s2 := base.forSession(&SessionInfo{ID: 1}), base.forSession(&SessionInfo{ID: 2})
		checkVerdict(t, s1.Inspect(streamed(ClientToUpstream, wsmw.OpText, 1)), Pass, 0)
		checkVerdict(t, s2.Inspect(streamed(ClientToUpstream, wsmw.OpText, 1)), Close, wsmw.StatusPolicyViolation)
	})
}

func TestRateLimitSharedConcurrent(t *testing.T) {
	const burst = 10
	rl := mustRateLimit(t, RateLimitConfig{Messages: 0.001, MessageBurst: burst, Mode: RateLimitClose})
	var passed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				if rl.Inspect(streamed(ClientToUpstream, wsmw.OpBinary, 1)).Action == Pass {
					passed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if passed.Load() != burst {
		t.Fatalf("%d messages passed a shared limit of burst %d", passed.Load(), burst)
	}
}

func TestNewRateLimitConfig(t *testing.T) {
	invalid := []struct {
		name string
		cfg  RateLimitConfig
	}{
		{"negative messages", RateLimitConfig{Messages: -1}},
		{"NaN bytes", RateLimitConfig{Bytes: math.NaN()}},
		{"negative message burst", RateLimitConfig{Messages: 1, MessageBurst: -1}},
		{"negative byte burst", RateLimitConfig{Bytes: 1, ByteBurst: -1}},
		{"unknown mode", RateLimitConfig{Mode: RateLimitClose + 1}},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewRateLimit(tt.cfg); !errors.Is(err, ErrInvalidRateLimit) {
				t.Fatalf("err = %v, want ErrInvalidRateLimit", err)
			}
		})
	}
	defaults := []struct {
		name                string
		cfg                 RateLimitConfig
		msgBurst, byteBurst int
	}{
		{"zero bursts are one second's worth", RateLimitConfig{Messages: 2.5, Bytes: 1000}, 3, 1000},
		{"slow rates get a burst of one", RateLimitConfig{Messages: 0.1, Bytes: 0.5}, 1, 1},
		{"explicit bursts are kept", RateLimitConfig{Messages: 10, MessageBurst: 2, Bytes: 10, ByteBurst: 7}, 2, 7},
		{"unlimited keeps zero", RateLimitConfig{Messages: math.Inf(1)}, 0, 0},
	}
	for _, tt := range defaults {
		t.Run(tt.name, func(t *testing.T) {
			got := mustRateLimit(t, tt.cfg).Config()
			if got.MessageBurst != tt.msgBurst || got.ByteBurst != tt.byteBurst {
				t.Fatalf("bursts = %d, %d; want %d, %d", got.MessageBurst, got.ByteBurst, tt.msgBurst, tt.byteBurst)
			}
		})
	}
	t.Run("infinite rate is unlimited", func(t *testing.T) {
		rl := mustRateLimit(t, RateLimitConfig{Messages: math.Inf(1), Bytes: math.Inf(1), Mode: RateLimitClose})
		for range 100 {
			checkVerdict(t, rl.Inspect(streamed(ClientToUpstream, wsmw.OpText, 1<<30)), Pass, 0)
		}
	})
}
