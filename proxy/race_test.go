//go:build race

package proxy

// raceEnabled: the race detector drops a share of sync.Pool puts on purpose, so
// allocation counts of pooled paths are not meaningful under it.
const raceEnabled = true
