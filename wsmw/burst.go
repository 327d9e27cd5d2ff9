package wsmw

// burster is what a burst hands a connection's frames to (see burst).
type burster interface {
	Step() bool
	BeforeWait() bool
}

// burstState is the state of a burst in progress on a reader.
type burstState struct {
	b         burster
	on        bool // the burst holds the read lock for the frames it hands to b (see lockRead)
	started   bool // b.BeforeWait has run once, where the burst began
	drained   bool // the last read emptied the socket: the next step is a wait
	stepEnded bool // b.Step returned false

	// quietAt is when (in milliseconds, wrapping) the last burst ended by
	// its wait's bound, or the last frame after it came, while the frames
	// come further apart than burstWindow; 0 otherwise. It outlives bursts.
	quietAt uint32
}
