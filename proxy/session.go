package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wsgate/wsgate/internal/relay"
	"github.com/wsgate/wsgate/wsmw"
)

// Who ended a session, for logs and metrics.
const (
	initiatorClient   = "client"
	initiatorUpstream = "upstream"
	initiatorProxy    = "proxy"
)

// leg is one side of a session: its connection and what the proxy tracks about it.
type leg struct {
	conn *wsmw.Conn
	name string // "client" or "upstream"

	writeDeadline atomic.Int64  // unix nanoseconds of the write deadline last set
	frames        atomic.Uint64 // frames and payload reads received, for keepalive liveness
	dataFrames    atomic.Int64  // data frames received, for the idle timeout
	msgs, bytes   atomic.Int64  // data messages and payload bytes received from this leg

	payload   io.Reader // the current frame's payload, from NextFrame
	alive     func()    // counts a sign of life while a long frame is forwarded (and arms the other leg's write deadline)
	pingTimer *time.Timer
	pingSent  uint64 // frames count when the last keepalive ping was sent
	pingWait  bool   // a keepalive ping was sent and its PingTimeout has not passed
}

// session is one proxied WebSocket connection pair.
type session struct {
	p        *Proxy
	info     SessionInfo
	cancel   context.CancelFunc
	upstream *Upstream
	chain    Chain
	client   leg
	up       leg
	kaToken  [16]byte // payload of the proxy's own pings, so their pongs are not forwarded

	directions atomic.Int32  // directions still forwarding (see directionEnded)
	ended      chan struct{} // closed when the session has ended, if a handler waits for it
	closing    atomic.Bool   // a close was sent or a leg failed: finish within CloseTimeout
	drainUntil atomic.Int64  // unix nanoseconds: the upstream of a drained session is read until then at most; 0 if not drained

	mu        sync.Mutex // guards the fields below and the timers' rescheduling
	endCode   wsmw.StatusCode
	endReason string
	endedBy   string
	endErr    error
	idleSeen  int64
	timers    []*time.Timer
	logBase   []zap.Field // request fields of the session's log line, taken at the handshake
}

// startSession starts forwarding one session: each direction runs in a
// goroutine of its own (see relayer.loop), and the last one to end finishes
// the session and releases the proxy's admitted slot it owns. With wait, the
// session's ended channel is closed once that is done.
func (p *Proxy) startSession(r *http.Request, client, up *wsmw.Conn, upstream *Upstream, wait bool) *session {
	s := p.newSession(r, client, up, upstream)
	if wait {
		s.ended = make(chan struct{})
	}
	s.begin()
	s.directions.Store(2)
	// Each relay goroutine starts by waiting for its source. Whether that wait
	// can be on the socket (relay.Idle) is found out here, on this goroutine's
	// stack, which the handshake has grown already, so that theirs stay small.
	relay.Idle(client)
	relay.Idle(up)
	go newRelayer(s, UpstreamToClient, &s.up, &s.client).loop()
	go newRelayer(s, ClientToUpstream, &s.client, &s.up).loop()
	return s
}

// directionEnded is called by each direction when its forwarding is over; the
// second call finishes the session.
func (s *session) directionEnded() {
	if s.directions.Add(-1) != 0 {
		return
	}
	s.finish()
	s.p.release()
	if s.ended != nil {
		close(s.ended)
	}
}

// newSession builds the session of an upgraded client and its dialed upstream.
func (p *Proxy) newSession(r *http.Request, client, up *wsmw.Conn, upstream *Upstream) *session {
	// The handshake request (its headers, URL and context chain, ~1.5 KiB) is kept
	// for the session's lifetime only when inspectors may look at it; the log line
	// needs just a few fields, taken now.
	ctx, req := context.Background(), (*http.Request)(nil)
	if len(p.cfg.Inspectors) > 0 {
		ctx = context.WithoutCancel(r.Context())
	}
	ctx, cancel := context.WithCancel(ctx)
	if len(p.cfg.Inspectors) > 0 {
		req = r.WithContext(ctx)
	}
	s := &session{
		p:        p,
		cancel:   cancel,
		upstream: upstream,
		client:   leg{conn: client, name: initiatorClient},
		up:       leg{conn: up, name: initiatorUpstream},
		endCode:  wsmw.StatusAbnormalClosure,
	}
	if p.log.Core().Enabled(zap.InfoLevel) {
		s.logBase = p.requestFields(r)
	}
	s.info = SessionInfo{
		ID:          p.nextID.Add(1),
		Request:     req,
		ClientAddr:  r.RemoteAddr,
		Upstream:    upstream.Address(),
		Subprotocol: client.Subprotocol(),
		ClientProto: clientProto(r),
		Start:       time.Now(),
		Context:     ctx,
	}
	s.chain = p.cfg.Inspectors.forSession(&s.info)
	// A read inside a long frame is a sign of life of its sender, and keeps the
	// write deadline of the leg it is forwarded to from going stale.
	s.client.alive = func() { s.client.frames.Add(1); s.armWrite(&s.up) }
	s.up.alive = func() { s.up.frames.Add(1); s.armWrite(&s.client) }
	binary.LittleEndian.PutUint64(s.kaToken[:], 0x6b612d6574616777) // "wgate-ka"
	binary.LittleEndian.PutUint64(s.kaToken[8:], rand.Uint64())
	return s
}

// begin registers the session with the proxy and the metrics, and starts its
// timers; a session that starts while the proxy drains is drained at once.
func (s *session) begin() {
	p := s.p
	// The proxy forwards pings and pongs itself instead of answering them.
	noop := func([]byte) error { return nil }
	s.client.conn.SetPingHandler(noop)
	s.up.conn.SetPingHandler(noop)
	s.upstream.active.Add(1)
	p.clock.start()
	p.cfg.Metrics.sessionStarted(s.info.ClientProto)
	p.mu.Lock()
	p.sessions[s] = struct{}{}
	draining, deadline := p.draining, p.drainDeadline
	p.mu.Unlock()
	if draining {
		go s.drain(p.cfg.DrainCode, "server shutting down", deadline)
	}
	s.startTimers()
}

// finish runs when both directions have ended: it closes both connections and
// records the session's end in the metrics and its log line.
func (s *session) finish() {
	p := s.p
	s.stopTimers()
	s.cancel()
	for _, l := range []*leg{&s.client, &s.up} {
		if ch := relay.Drained(l.conn); ch != nil {
			<-ch // a failed leg's close handshake, bounded by CloseTimeout
		}
		l.conn.CloseNow()
	}
	s.upstream.active.Add(-1)
	p.mu.Lock()
	delete(p.sessions, s)
	s.recordEnd() // under p.mu, so a scrape sees the counts either live or ended, never both
	p.mu.Unlock()
	s.logEnd()
}

// startTimers arms the idle, lifetime and keepalive timers. They run as
// time.AfterFunc callbacks: no goroutine waits while the session is quiet.
func (s *session) startTimers() {
	cfg := &s.p.cfg
	s.mu.Lock()
	defer s.mu.Unlock()
	if cfg.IdleTimeout > 0 {
		var t *time.Timer
		t = time.AfterFunc(cfg.IdleTimeout, func() {
			n := s.client.dataFrames.Load() + s.up.dataFrames.Load()
			s.mu.Lock()
			idle := n == s.idleSeen
			s.idleSeen = n
			if !idle && !s.closing.Load() {
				t.Reset(cfg.IdleTimeout)
			}
			s.mu.Unlock()
			if idle {
				s.closeBoth(wsmw.StatusGoingAway, "idle timeout", initiatorProxy)
			}
		})
		s.timers = append(s.timers, t)
	}
	if cfg.MaxLifetime > 0 {
		s.timers = append(s.timers, time.AfterFunc(cfg.MaxLifetime, func() {
			s.closeBoth(wsmw.StatusGoingAway, "session lifetime exceeded", initiatorProxy)
		}))
	}
	if cfg.PingInterval > 0 {
		for _, l := range []*leg{&s.client, &s.up} {
			l := l
			l.pingTimer = time.AfterFunc(cfg.PingInterval, func() { s.keepalive(l) })
			s.timers = append(s.timers, l.pingTimer)
		}
	}
}

func (s *session) stopTimers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.timers {
		t.Stop()
	}
	s.timers = nil
}

// keepalive runs on a leg's ping timer: it sends a ping, then checks after
// PingTimeout that the leg has sent something since; a silent leg is dead.
func (s *session) keepalive(l *leg) {
	cfg := &s.p.cfg
	s.mu.Lock()
	if s.timers == nil || s.closing.Load() {
		s.mu.Unlock()
		return
	}
	if l.pingWait {
		alive := l.frames.Load() != l.pingSent
		l.pingWait = false
		if !alive {
			s.mu.Unlock()
			s.legDead(l, errors.New("no pong within the ping timeout"))
			return
		}
		l.pingTimer.Reset(cfg.PingInterval - cfg.PingTimeout)
		s.mu.Unlock()
		return
	}
	l.pingWait = true
	l.pingSent = l.frames.Load()
	s.mu.Unlock()
	s.armWrite(l)
	_ = l.conn.Ping(s.kaToken[:])
	// The timeout runs from when the ping went out: it may have waited behind a long frame.
	s.mu.Lock()
	if s.timers != nil {
		l.pingTimer.Reset(cfg.PingTimeout)
	}
	s.mu.Unlock()
}

// other returns the leg that is not l.
func (s *session) other(l *leg) *leg {
	if l == &s.client {
		return &s.up
	}
	return &s.client
}

// armWrite refreshes a leg's write deadline when less than 3/4 of
// WriteTimeout is left of it by the proxy's coarse clock, which lags by at
// most WriteTimeout/8: a stalled write fails after between 5/8 and all of
// WriteTimeout. Most frames thus cost no time.Now.
func (s *session) armWrite(l *leg) {
	wt := s.p.cfg.WriteTimeout
	if l.writeDeadline.Load()-s.p.clock.unixNano() >= int64(wt)*3/4 {
		return
	}
	d := time.Now().Add(wt)
	l.writeDeadline.Store(d.UnixNano())
	_ = l.conn.SetWriteDeadline(d)
}

// recordEnd moves the session's counts to the metrics' ended totals.
func (s *session) recordEnd() {
	s.mu.Lock()
	code, by := s.endCode, s.endedBy
	s.mu.Unlock()
	if by == "" {
		by = initiatorProxy
	}
	s.p.cfg.Metrics.sessionEnded(code, by, s.info.ClientProto,
		[2]int64{s.client.msgs.Load(), s.client.bytes.Load()},
		[2]int64{s.up.msgs.Load(), s.up.bytes.Load()})
}

// logEnd writes the session's one log line.
func (s *session) logEnd() {
	s.mu.Lock()
	code, reason, by, err := s.endCode, s.endReason, s.endedBy, s.endErr
	s.mu.Unlock()
	if by == "" {
		by = initiatorProxy
	}
	ce := s.p.log.Check(zap.InfoLevel, "session closed")
	if ce == nil {
		return
	}
	fields := append(s.logBase[:len(s.logBase):len(s.logBase)],
		zap.Uint64("session", s.info.ID),
		zap.String("client_proto", s.info.ClientProto),
		zap.String("upstream", s.info.Upstream),
		zap.String("subprotocol", s.info.Subprotocol),
		zap.Duration("duration", time.Since(s.info.Start)),
		zap.Int64("msgs_up", s.client.msgs.Load()),
		zap.Int64("bytes_up", s.client.bytes.Load()),
		zap.Int64("msgs_down", s.up.msgs.Load()),
		zap.Int64("bytes_down", s.up.bytes.Load()),
		zap.Int("close_code", int(code)),
		zap.String("close_reason", reason),
		zap.String("closed_by", by),
	)
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	ce.Write(fields...)
}
