package models

// hashSet is a set of 64-bit hashes: open addressing with linear probing
// (Knuth, "The Art of Computer Programming", vol. 3, section 6.4, algorithm
// L) over a power-of-two table of the keys themselves, with 0 marking an
// empty slot and the key 0 kept as a flag. Context asks it up to Order+1
// questions per reading; a question touches one cache line in the common
// case, where a Go map of the same size first reads its directory and a
// table header, each a cache miss of its own when many series take turns.
// The zero value is an empty set.
type hashSet struct {
	slots []uint64
	shift uint // 64 - log2(len(slots))
	n     int  // keys in slots, 0 excluded
	zero  bool // whether 0 is in the set
}

// len returns the number of keys in the set.
func (s *hashSet) len() int {
	if s.zero {
		return s.n + 1
	}
	return s.n
}

// home returns k's first slot: Fibonacci hashing (Knuth, section 6.4), so
// the table index depends on every bit of k.
func (s *hashSet) home(k uint64) uint64 {
	return (k * 0x9e3779b97f4a7c15) >> s.shift
}

// has reports whether k is in the set.
func (s *hashSet) has(k uint64) bool {
	if k == 0 {
		return s.zero
	}
	if len(s.slots) == 0 {
		return false
	}
	mask := uint64(len(s.slots) - 1)
	for i := s.home(k); ; i = (i + 1) & mask {
		switch s.slots[i] {
		case k:
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
	s.put(k)
	s.n++
}

// put stores k in its first free slot.
func (s *hashSet) put(k uint64) {
	mask := uint64(len(s.slots) - 1)
	i := s.home(k)
	for s.slots[i] != 0 {
		i = (i + 1) & mask
	}
	s.slots[i] = k
}

// grow doubles the table (to 16 slots at first) and rehashes the keys.
func (s *hashSet) grow() {
	old := s.slots
	n := max(16, 2*len(old))
	s.slots = make([]uint64, n)
	s.shift = 64
	for m := n; m > 1; m >>= 1 {
		s.shift--
	}
	for _, k := range old {
		if k != 0 {
			s.put(k)
		}
	}
}
