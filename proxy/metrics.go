package proxy

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wsgate/wsgate/wsmw"
)

// Metrics are the proxy's Prometheus metrics. One Metrics may serve several
// proxies (routes). Message and byte counters are not touched per frame: they
// are summed from the live sessions at scrape time, plus the totals of ended
// sessions, so forwarding pays nothing for them. A nil *Metrics records nothing.
type Metrics struct {
	active            prometheus.Gauge
	sessions          *prometheus.CounterVec
	closes            *prometheus.CounterVec
	dialSeconds       *prometheus.HistogramVec
	handshakeFailures *prometheus.CounterVec
	msgsDesc          *prometheus.Desc
	bytesDesc         *prometheus.Desc

	mu      sync.Mutex
	proxies map[*Proxy]struct{}
	ended   [2]struct{ msgs, bytes atomic.Int64 }
}

var (
	metricsMu    sync.Mutex
	metricsCache = map[metricsKey]*Metrics{}
)

type metricsKey struct {
	reg       prometheus.Registerer
	namespace string
}

// NewMetrics creates the metrics under namespace (default "wsgate") and registers
// them on reg (nil: not registered). Calling it again with the same registerer
// and namespace returns the same *Metrics, so a configuration reload keeps counting.
func NewMetrics(reg prometheus.Registerer, namespace string) (*Metrics, error) {
	if namespace == "" {
		namespace = "wsgate"
	}
	key := metricsKey{reg, namespace}
	metricsMu.Lock()
	defer metricsMu.Unlock()
	if reg != nil {
		if m, ok := metricsCache[key]; ok {
			return m, nil
		}
	}
	m := &Metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sessions_active", Help: "WebSocket sessions being proxied.",
		}),
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sessions_total", Help: "WebSocket sessions proxied since start, by the client leg's protocol (http/1.1, h2, h3).",
		}, []string{"client_proto"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "closes_total", Help: "Ended sessions by close code, by who closed first and by the client leg's protocol.",
		}, []string{"code", "initiator", "client_proto"}),
		dialSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "upstream_dial_duration_seconds", Help: "Upstream dial and handshake latency.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"upstream", "result"}),
		handshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "handshake_failures_total", Help: "Refused or failed handshakes by reason.",
		}, []string{"reason"}),
		msgsDesc: prometheus.NewDesc(namespace+"_messages_total",
			"Data messages forwarded, by direction (up: client to upstream).", []string{"direction"}, nil),
		bytesDesc: prometheus.NewDesc(namespace+"_bytes_total",
			"Payload bytes of forwarded data messages, by direction.", []string{"direction"}, nil),
		proxies: make(map[*Proxy]struct{}),
	}
	for _, proto := range []string{"http/1.1", "h2", "h3"} {
		m.sessions.WithLabelValues(proto) // every protocol's series exists from the start, at 0
	}
	if reg != nil {
		if err := reg.Register(m); err != nil {
			return nil, err
		}
		metricsCache[key] = m
	}
	return m, nil
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.active.Describe(ch)
	m.sessions.Describe(ch)
	m.closes.Describe(ch)
	m.dialSeconds.Describe(ch)
	m.handshakeFailures.Describe(ch)
	ch <- m.msgsDesc
	ch <- m.bytesDesc
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.active.Collect(ch)
	m.sessions.Collect(ch)
	m.closes.Collect(ch)
	m.dialSeconds.Collect(ch)
	m.handshakeFailures.Collect(ch)
	var msgs, bytes [2]int64
	for d := range m.ended {
		msgs[d] = m.ended[d].msgs.Load()
		bytes[d] = m.ended[d].bytes.Load()
	}
	m.mu.Lock()
	for p := range m.proxies {
		p.mu.Lock()
		for s := range p.sessions {
			msgs[ClientToUpstream] += s.client.msgs.Load()
			bytes[ClientToUpstream] += s.client.bytes.Load()
			msgs[UpstreamToClient] += s.up.msgs.Load()
			bytes[UpstreamToClient] += s.up.bytes.Load()
		}
		p.mu.Unlock()
	}
	m.mu.Unlock()
	for _, d := range []Direction{ClientToUpstream, UpstreamToClient} {
		ch <- prometheus.MustNewConstMetric(m.msgsDesc, prometheus.CounterValue, float64(msgs[d]), d.String())
		ch <- prometheus.MustNewConstMetric(m.bytesDesc, prometheus.CounterValue, float64(bytes[d]), d.String())
	}
}

func (m *Metrics) attach(p *Proxy) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.proxies[p] = struct{}{}
	m.mu.Unlock()
}

func (m *Metrics) detach(p *Proxy) {
	if m == nil {
		return
	}
	m.mu.Lock()
	delete(m.proxies, p)
	m.mu.Unlock()
}

// sessionStarted counts a session whose client leg speaks proto (see clientProto).
func (m *Metrics) sessionStarted(proto string) {
	if m == nil {
		return
	}
	m.active.Inc()
	m.sessions.WithLabelValues(proto).Inc()
}

// sessionEnded records the end of a session; its counts move to the ended totals.
func (m *Metrics) sessionEnded(code wsmw.StatusCode, initiator, proto string, up, down [2]int64) {
	if m == nil {
		return
	}
	m.active.Dec()
	m.closes.WithLabelValues(strconv.Itoa(int(code)), initiator, proto).Inc()
	m.ended[ClientToUpstream].msgs.Add(up[0])
	m.ended[ClientToUpstream].bytes.Add(up[1])
	m.ended[UpstreamToClient].msgs.Add(down[0])
	m.ended[UpstreamToClient].bytes.Add(down[1])
}

func (m *Metrics) dialDuration(upstream string, d time.Duration, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.dialSeconds.WithLabelValues(upstream, result).Observe(d.Seconds())
}

func (m *Metrics) handshakeFailure(reason string) {
	if m == nil {
		return
	}
	m.handshakeFailures.WithLabelValues(reason).Inc()
}
