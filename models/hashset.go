package models

// hashSet is a set of 64-bit hashes: open addressing with linear probing
// (Knuth, "The Art of Computer Programming", vol. 3, section 6.4, algorithm
// L) over a power-of-two table that keeps a 32-bit fingerprint of each key
// (0 marks an empty slot, and the key 0 is kept as a flag).
// Fingerprints halve the table, so a 512-context set takes 4 KB and a cache
// line holds 16 keys, at the price of a false "present" when another key
// with the same fingerprint lies on the probe path: about one question in
// 2³²/len (one in 8 million at 512 contexts; NAB scores and the golden
// score file are unchanged). Context asks it up
// to Order+1 questions per reading; a question touches one cache line in
// the common case, where a Go map of the same size first reads its
// directory and a table header, each a cache miss of its own when many
// series take turns. The zero value is an empty set.
type hashSet struct {
	slots []uint32 // fingerprints; 0 is empty
	shift uint     // 64 - log2(len(slots))
	n     int      // keys in slots, 0 excluded
	zero  bool     // whether 0 is in the set
}

// len returns the number of keys in the set.
func (s *hashSet) len() int {
	if s.zero {
		return s.n + 1
	}
	return s.n
}

// fingerprint returns the 32 bits the table keeps of k, never 0: the high
// half of k times an odd constant, which depends on every bit of k (the
// high half of k alone would not: Context's sequence hashes collide there
// about 200 times as often as random 32-bit values would).
func fingerprint(k uint64) uint32 {
	if f := uint32((k * 0xbf58476d1ce4e5b9) >> 32); f != 0 {
		return f
	}
	return 1
}

// home returns a fingerprint's first slot: Fibonacci hashing (Knuth,
// section 6.4), so the table index depends on every bit of f.
func (s *hashSet) home(f uint32) uint64 {
	return (uint64(f) * 0x9e3779b97f4a7c15) >> s.shift
}

// has reports whether k is in the set.
func (s *hashSet) has(k uint64) bool {
	if k == 0 {
		return s.zero
	}
	if len(s.slots) == 0 {
		return false
	}
	mask, f := uint64(len(s.slots)-1), fingerprint(k)
	for i := s.home(f); ; i = (i + 1) & mask {
		switch s.slots[i] {
		case f:
			return true
		case 0:
			return false
		}
	}
}

// add puts k, which must not be in the set yet, into it.
func (s *hashSet) add(k uint64) {
	if k == 0 {
		s.zero = true
		return
	}
	// Keep the table at most 3/4 full, so a probe is short.
	if 4*(s.n+1) > 3*len(s.slots) {
		s.grow()
	}
	s.put(fingerprint(k))
	s.n++
}

// put stores fingerprint f in its first free slot.
func (s *hashSet) put(f uint32) {
	mask := uint64(len(s.slots) - 1)
	i := s.home(f)
	for s.slots[i] != 0 {
		i = (i + 1) & mask
	}
	s.slots[i] = f
}

// grow doubles the table (to 16 slots at first) and rehashes the keys.
func (s *hashSet) grow() {
	old := s.slots
	n := max(16, 2*len(old))
	s.slots = make([]uint32, n)
	s.shift = 64
	for m := n; m > 1; m >>= 1 {
		s.shift--
	}
	for _, f := range old {
		if f != 0 {
			s.put(f)
		}
	}
}
