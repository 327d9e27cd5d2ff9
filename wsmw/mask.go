package wsmw

import (
	"encoding/binary"
	"math/bits"
)

// Mask XORs b in place with key (RFC 6455 §5.3), starting at byte pos of the key
// cycle, and returns the position after b, so a payload can be masked in pieces:
//
//	pos := 0
//	pos = Mask(key, pos, chunk1)
//	pos = Mask(key, pos, chunk2)
//
// It works on 8 bytes at a time (32 per loop turn) once b is aligned to the key.
func Mask(key [4]byte, pos int, b []byte) int {
	pos &= 3
	// Bytewise until the key cycle restarts, so the word key lines up with b.
	for pos != 0 && len(b) > 0 {
		b[0] ^= key[pos]
		b = b[1:]
		pos = (pos + 1) & 3
	}
	if len(b) >= 8 {
		k32 := uint64(binary.LittleEndian.Uint32(key[:]))
		k := k32 | k32<<32
		for len(b) >= 32 {
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
			binary.LittleEndian.PutUint64(b[8:], binary.LittleEndian.Uint64(b[8:])^k)
			binary.LittleEndian.PutUint64(b[16:], binary.LittleEndian.Uint64(b[16:])^k)
			binary.LittleEndian.PutUint64(b[24:], binary.LittleEndian.Uint64(b[24:])^k)
			b = b[32:]
		}
		for len(b) >= 8 {
			binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
			b = b[8:]
		}
	}
	for i := range b {
		b[i] ^= key[pos]
		pos = (pos + 1) & 3
	}
	return pos
}

// rotateKey returns key as seen from position pos of its cycle, so that masking
// at pos with key equals masking at 0 with the rotated key.
func rotateKey(key [4]byte, pos int) [4]byte {
	k := binary.LittleEndian.Uint32(key[:])
	var out [4]byte
	binary.LittleEndian.PutUint32(out[:], bits.RotateLeft32(k, -8*(pos&3)))
	return out
}

// remask converts b, masked with from starting at fromPos, into b masked with to
// starting at toPos, in one pass. It returns both positions after b. A proxy uses
// it to forward a client's frame to an upstream under a fresh key without a
// separate unmask and mask.
func remask(from [4]byte, fromPos int, to [4]byte, toPos int, b []byte) (int, int) {
	f := rotateKey(from, fromPos)
	t := rotateKey(to, toPos)
	var k [4]byte
	for i := range k {
		k[i] = f[i] ^ t[i]
	}
	Mask(k, 0, b)
	n := len(b)
	return (fromPos + n) & 3, (toPos + n) & 3
}
