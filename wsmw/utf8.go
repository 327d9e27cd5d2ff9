package wsmw

import "unicode/utf8"

// utf8Validator checks UTF-8 incrementally across the fragments of a text message
// (RFC 6455 §8.1) and fails at the first byte that can never be part of a valid
// sequence, not only at the end of the message. It is the DFA of Björn Höhrmann
// ("Flexible and Economical UTF-8 Decoder") at the edges of each chunk, and the
// standard library's utf8.Valid for the complete sequences in between.
type utf8Validator struct {
	state uint8
}

const (
	utf8Accept = 0
	utf8Reject = 12
)

// utf8Class maps a byte to its character class.
var utf8Class = [256]uint8{
	0x00: 0, 0x80: 1, 0x90: 9, 0xA0: 7, 0xC0: 8, 0xC2: 2, 0xE0: 10, 0xE1: 3, 0xED: 4, 0xEE: 3,
	0xF0: 11, 0xF1: 6, 0xF4: 5, 0xF5: 8,
}

func init() {
	// Expand the range starts above into the full table.
	var cur uint8
	for i := 0; i < 256; i++ {
		switch i {
		case 0x00, 0x80, 0x90, 0xA0, 0xC0, 0xC2, 0xE0, 0xE1, 0xED, 0xEE, 0xF0, 0xF1, 0xF4, 0xF5:
			cur = utf8Class[i]
		}
		utf8Class[i] = cur
	}
}

// utf8Trans is the transition table: state (a multiple of 12) + class.
var utf8Trans = [108]uint8{
	0, 12, 24, 36, 60, 96, 84, 12, 12, 12, 48, 72, // state 0 (accept)
	12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, // state 12 (reject)
	12, 0, 12, 12, 12, 12, 12, 0, 12, 0, 12, 12, // state 24: 1 continuation left
	12, 24, 12, 12, 12, 12, 12, 24, 12, 24, 12, 12, // state 36: 2 left
	12, 12, 12, 12, 12, 12, 12, 24, 12, 12, 12, 12, // state 48: after E0, need A0..BF
	12, 24, 12, 12, 12, 12, 12, 12, 12, 24, 12, 12, // state 60: after ED, need 80..9F
	12, 12, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12, // state 72: after F0, need 90..BF
	12, 36, 12, 12, 12, 12, 12, 36, 12, 36, 12, 12, // state 84: after F1..F3, 3 left
	12, 36, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, // state 96: after F4, need 80..8F
}

// write feeds p to the validator and reports false as soon as p makes the
// sequence invalid. The complete sequences in the middle of p are checked by
// utf8.Valid (the standard library's fast path); the DFA only handles a sequence
// left open by the previous write and one cut off at the end of p, so a prefix
// that can never become valid (0xF5, or 0xED 0xA0: a surrogate) fails at once.
func (v *utf8Validator) write(p []byte) bool {
	for v.state != utf8Accept && len(p) > 0 {
		if !v.step(p[0]) {
			return false
		}
		p = p[1:]
	}
	if len(p) == 0 {
		return true
	}
	cut := completePrefix(p)
	if !utf8.Valid(p[:cut]) {
		v.state = utf8Reject
		return false
	}
	for _, b := range p[cut:] {
		if !v.step(b) {
			return false
		}
	}
	return true
}

// step advances the DFA by one byte.
func (v *utf8Validator) step(b byte) bool {
	v.state = utf8Trans[v.state+utf8Class[b]]
	return v.state != utf8Reject
}

// completePrefix returns the length of p without a trailing multi-byte sequence
// that p cuts off (at most 3 bytes). Invalid bytes are left in the prefix.
func completePrefix(p []byte) int {
	for i := len(p) - 1; i >= 0 && i >= len(p)-3; i-- {
		b := p[i]
		switch {
		case b < 0x80:
			return len(p)
		case b < 0xC0:
			continue // continuation byte: look further back for its lead
		}
		need := 4
		switch {
		case b < 0xE0:
			need = 2
		case b < 0xF0:
			need = 3
		}
		if len(p)-i < need {
			return i
		}
		return len(p)
	}
	return len(p)
}

// complete reports whether the bytes so far end on a character boundary.
func (v *utf8Validator) complete() bool { return v.state == utf8Accept }

func (v *utf8Validator) reset() { v.state = utf8Accept }

// validUTF8 reports whether p is valid UTF-8 using the same validator as the frame reader.
func validUTF8(p []byte) bool {
	var v utf8Validator
	return v.write(p) && v.complete()
}
