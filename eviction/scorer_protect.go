package eviction

import "math"

// ProtectSinkWindow gives the first sink and the last window tokens of every head a
// score above every other score of the layer, so that every allocator keeps them
// before any other token. The protected score is the layer's largest finite score + 1
// (taken over all heads, before protecting), as kvpress's LUKVPress does
// (lukv_press.py: scores.max().item() + 1); all protected tokens get the same value.
// scores is [Nkv][T] (heads may differ in T) and is changed in place. A sink or window
// larger than a head covers the whole head; negative values count as 0. An unprotected
// score at or above the protected one (+Inf, or the largest float32) is lowered to just
// below it.
func ProtectSinkWindow(scores [][]float32, sink, window int) {
	if sink <= 0 && window <= 0 {
		return
	}
	top := aboveAll(scores)
	below := math.Nextafter32(top, float32(math.Inf(-1)))
	for _, s := range scores {
		T := len(s)
		for j, v := range s {
			if v >= top { // +Inf, or a tie with the largest float32: protection must win
				s[j] = below
			}
		}
		for j := 0; j < min(max(sink, 0), T); j++ {
			s[j] = top
		}
		for j := max(0, T-max(window, 0)); j < T; j++ {
			s[j] = top
		}
	}
}
