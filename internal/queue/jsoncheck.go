package queue

import "strconv"

// ScanJSON walks valid JSON once: the deepest nesting of objects and arrays, and whether
// every string escape is one Postgres accepts in jsonb (not \u0000, no lone surrogate).
func ScanJSON(b []byte) (deepest int, storable bool) {
	depth := 0
	inString := false
	pendingHigh := false // the previous escape was a high surrogate
	for i := 0; i < len(b); i++ {
		ch := b[i]
		if !inString {
			switch ch {
			case '"':
				inString = true
			case '{', '[':
				depth++
				deepest = max(deepest, depth)
			case '}', ']':
				depth--
			}
			continue
		}
		switch {
		case ch == '"':
			if pendingHigh {
				return deepest, false
			}
			inString = false
		case ch == '\\' && i+1 < len(b) && b[i+1] == 'u' && i+5 < len(b):
			code, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 16)
			if err != nil {
				return deepest, false // json.Valid has checked this; be safe
			}
			switch {
			case code == 0:
				return deepest, false
			case code >= 0xD800 && code <= 0xDBFF:
				if pendingHigh {
					return deepest, false
				}
				pendingHigh = true
			case code >= 0xDC00 && code <= 0xDFFF:
				if !pendingHigh {
					return deepest, false
				}
				pendingHigh = false
			default:
				if pendingHigh {
					return deepest, false
				}
			}
			i += 5
		case ch == '\\':
			if pendingHigh {
				return deepest, false
			}
			i++ // the escaped character
		default:
			if pendingHigh {
				return deepest, false
			}
		}
	}
	return deepest, true
}
