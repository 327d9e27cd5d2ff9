package proxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"golang.org/x/time/rate"

	"github.com/wsgate/wsgate/wsmw"
)

// RateLimitMode says what a RateLimit does with a message over the limit.
type RateLimitMode uint8

// Rate limit modes.
const (
	RateLimitDelay RateLimitMode = iota // hold the message until the budget allows it (back-pressure)
	RateLimitClose                      // close the session with 1008 (policy violation)
)

// ErrInvalidRateLimit is returned, wrapped, by NewRateLimit for a config it cannot use.
var ErrInvalidRateLimit = errors.New("proxy: invalid rate limit")

// RateLimitConfig sets the budgets of a RateLimit; each direction gets its own.
type RateLimitConfig struct {
	Messages     float64 // messages per second; 0 (or +Inf) means no message limit
	MessageBurst int     // messages allowed at once; 0 means one second's worth (at least 1)
	Bytes        float64 // bytes per second, counted with Message.Length; 0 (or +Inf) means no byte limit
	ByteBurst    int     // bytes allowed at once; 0 means one second's worth (at least 1)
	Mode         RateLimitMode
}

// RateLimit limits messages and bytes per second with token buckets, one pair
// per direction, so that a client (or an upstream) cannot flood the other side.
//
// Used in a Chain it is a SessionInspector: every session gets fresh buckets
// from ForSession. The value itself, used directly or through Shared, keeps one
// set of buckets for every session that uses it: a global limit.
//
// Bytes are counted with Message.Length, which for a streamed message (no
// inspector of the chain needs its payload) is the length of its first frame
// only. A message longer than the byte burst never fits the bucket at once: in
// delay mode it waits for its full length in burst-sized steps; in close mode
// it is charged as ByteBurst, so it passes only when the bucket is full.
// In delay mode a message stops waiting and passes when the session's
// context ends (the session is going away anyway); in close mode a message
// refused for its bytes has still spent its message token.
type RateLimit struct {
	cfg  RateLimitConfig
	dirs [2]buckets // indexed by Direction
}

// buckets are the token buckets of one direction; nil means unlimited.
type buckets struct {
	msgs, bytes *rate.Limiter
}

// NewRateLimit returns a RateLimit for cfg, or an error wrapping
// ErrInvalidRateLimit if a rate or burst is negative or the mode unknown.
func NewRateLimit(cfg RateLimitConfig) (*RateLimit, error) {
	switch {
	case !validRate(cfg.Messages):
		return nil, fmt.Errorf("%w: messages per second %v", ErrInvalidRateLimit, cfg.Messages)
	case !validRate(cfg.Bytes):
		return nil, fmt.Errorf("%w: bytes per second %v", ErrInvalidRateLimit, cfg.Bytes)
	case cfg.MessageBurst < 0:
		return nil, fmt.Errorf("%w: message burst %d", ErrInvalidRateLimit, cfg.MessageBurst)
	case cfg.ByteBurst < 0:
		return nil, fmt.Errorf("%w: byte burst %d", ErrInvalidRateLimit, cfg.ByteBurst)
	case cfg.Mode > RateLimitClose:
		return nil, fmt.Errorf("%w: mode %d", ErrInvalidRateLimit, cfg.Mode)
	}
	cfg.MessageBurst = defaultBurst(cfg.Messages, cfg.MessageBurst)
	cfg.ByteBurst = defaultBurst(cfg.Bytes, cfg.ByteBurst)
	return newRateLimit(cfg), nil
}

// newRateLimit builds fresh buckets for a validated cfg.
func newRateLimit(cfg RateLimitConfig) *RateLimit {
	r := &RateLimit{cfg: cfg}
	for i := range r.dirs {
		r.dirs[i] = buckets{
			msgs:  newBucket(cfg.Messages, cfg.MessageBurst),
			bytes: newBucket(cfg.Bytes, cfg.ByteBurst),
		}
	}
	return r
}

// validRate reports whether per is a usable rate: zero, positive or +Inf.
func validRate(per float64) bool { return per >= 0 } // false for NaN too

// defaultBurst resolves a zero burst to one second's worth, at least 1.
func defaultBurst(per float64, burst int) int {
	switch {
	case burst > 0 || per == 0 || math.IsInf(per, 1):
		return burst
	case per >= math.MaxInt32:
		return math.MaxInt32
	}
	return max(1, int(math.Ceil(per)))
}

// newBucket returns a full token bucket, or nil when per means unlimited.
func newBucket(per float64, burst int) *rate.Limiter {
	if per == 0 || math.IsInf(per, 1) {
		return nil
	}
	return rate.NewLimiter(rate.Limit(per), burst)
}

// Config returns the limits, with zero bursts resolved.
func (r *RateLimit) Config() RateLimitConfig { return r.cfg }

// NeedsPayload reports false: the length is enough.
func (*RateLimit) NeedsPayload(Direction, wsmw.OpCode) bool { return false }

// ForSession returns a RateLimit with the same limits and fresh buckets.
func (r *RateLimit) ForSession(*SessionInfo) Inspector { return newRateLimit(r.cfg) }

// Shared returns r without ForSession, so that in a Chain all sessions share
// r's buckets (a global limit) instead of getting their own.
func (r *RateLimit) Shared() Inspector { return sharedRateLimit{r} }

// sharedRateLimit hides ForSession from Chain.
type sharedRateLimit struct{ r *RateLimit }

// NeedsPayload reports false, like RateLimit.
func (s sharedRateLimit) NeedsPayload(dir Direction, op wsmw.OpCode) bool {
	return s.r.NeedsPayload(dir, op)
}

// Inspect charges the shared buckets.
func (s sharedRateLimit) Inspect(m *Message) Verdict { return s.r.Inspect(m) }

// Inspect charges m to its direction's buckets, delaying it or closing the
// session with 1008 when they are empty, depending on the mode.
func (r *RateLimit) Inspect(m *Message) Verdict {
	b := &r.dirs[0]
	if m.Direction != ClientToUpstream {
		b = &r.dirs[1]
	}
	if r.cfg.Mode == RateLimitClose {
		now := time.Now()
		if (b.msgs != nil && !b.msgs.AllowN(now, 1)) ||
			(b.bytes != nil && !b.bytes.AllowN(now, int(min(m.Length, int64(r.cfg.ByteBurst))))) {
			return Verdict{Action: Close, Code: wsmw.StatusPolicyViolation, Reason: "rate limit exceeded"}
		}
		return Verdict{Action: Pass}
	}
	ctx := context.Background()
	if m.Session != nil && m.Session.Context != nil {
		ctx = m.Session.Context
	}
	if b.msgs != nil && !wait(ctx, b.msgs, 1) {
		return Verdict{Action: Pass}
	}
	if b.bytes != nil {
		step := int64(r.cfg.ByteBurst)
		for n := m.Length; n > 0; n -= step {
			if !wait(ctx, b.bytes, int(min(n, step))) {
				break
			}
		}
	}
	return Verdict{Action: Pass}
}

// wait takes n tokens from lim, waiting for them, and reports false if ctx
// ended first. n must not exceed lim's burst.
func wait(ctx context.Context, lim *rate.Limiter, n int) bool {
	if lim.WaitN(ctx, n) == nil {
		return true
	}
	// WaitN fails at once when the tokens come after ctx's deadline: wait
	// for the deadline rather than let the message through early.
	if _, ok := ctx.Deadline(); ok {
		<-ctx.Done()
	}
	return false
}
