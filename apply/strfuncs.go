package apply

import (
	"bytes"
	"fmt"
	"unsafe"

	"modernc.org/libc"
	lib "modernc.org/sqlite/lib"
	"zombiezen.com/go/sqlite"
)

// Linear instr() and replace() (DESIGN.md "Large values"). SQLite's
// instrFunc and replaceFunc (func.c) compare the needle at every position
// of the haystack with memcmp, so one call is O(len X * len Y) in one VM
// step and allocates nothing: a 10 KB needle in a 100 KB haystack takes
// 0.4 s, megabyte values hours. On the apply connection both are replaced
// by the functions below, which take the same arguments through the same
// C API calls in the same order (sqlite3_value_type, _bytes, _text,
// _blob, _dup), so conversions, and the allocations SQLite makes for them,
// are SQLite's own, and give the same results and errors; only the search
// is linear (searchFrom). Reader connections keep SQLite's.
//
// They are registered with exactly SQLite's argument counts (2 and 3), so
// another count fails with SQLite's own "wrong number of arguments", and as
// deterministic and innocuous (the built-ins are SQLITE_FUNC_CONSTANT and
// not unsafe), so they work wherever the built-ins do: CHECK constraints,
// generated columns, expression indexes, triggers, DEFAULTs, views.
//
// Entries of every version use them: results are identical, a call is one
// VM step either way, and before v5 no allocation is charged, so v1 to v4
// entries have the same outcomes and costs as with the built-ins. In a v5
// entry replace() charges one allocation of its result (the larger of
// len X and the result, plus 1), where SQLite's allocates len X + 1 and
// reallocates as the result grows; v5 is charged as this release does.

// installLinearStrings registers instrFunc and replaceFunc on the apply
// connection c.
func installLinearStrings(c *sqlite.Conn) error {
	tls, db := connHandles(c)
	for _, f := range []struct {
		name string
		n    int32
		fn   uintptr
	}{
		{"instr", 2, cFuncPointer(instrFunc)},
		{"replace", 3, cFuncPointer(replaceFunc)},
	} {
		z, err := libc.CString(f.name)
		if err != nil {
			return err
		}
		rc := lib.Xsqlite3_create_function_v2(tls, db, z, f.n,
			lib.SQLITE_UTF8|lib.SQLITE_DETERMINISTIC|lib.SQLITE_INNOCUOUS, 0, f.fn, 0, 0, 0)
		libc.Xfree(tls, z)
		if rc != lib.SQLITE_OK {
			return fmt.Errorf("register %s(): code %d", f.name, rc)
		}
	}
	return nil
}

// sqliteFree is sqlite3_free as a destructor for sqlite3_result_text.
var sqliteFree = cFuncPointer(lib.Xsqlite3_free)

// cBytes returns the n bytes at p in modernc's C heap, without copying.
func cBytes(p uintptr, n int32) []byte {
	if p == 0 || n <= 0 {
		return nil
	}
	return unsafe.Slice((*byte)(cptr(p)), n)
}

func funcArg(argv uintptr, i int) uintptr {
	return *(*uintptr)(cptr(argv + uintptr(i)*unsafe.Sizeof(uintptr(0))))
}

// instrFunc is SQLite's instrFunc with a linear search (instrPos).
func instrFunc(tls *libc.TLS, ctx uintptr, argc int32, argv uintptr) {
	h, n := funcArg(argv, 0), funcArg(argv, 1)
	th, tn := lib.Xsqlite3_value_type(tls, h), lib.Xsqlite3_value_type(tls, n)
	if th == lib.SQLITE_NULL || tn == lib.SQLITE_NULL {
		return
	}
	nH := lib.Xsqlite3_value_bytes(tls, h)
	nN := lib.Xsqlite3_value_bytes(tls, n)
	var pC1, pC2 uintptr
	defer func() {
		lib.Xsqlite3_value_free(tls, pC1)
		lib.Xsqlite3_value_free(tls, pC2)
	}()
	N := int32(1)
	if nN > 0 {
		var zH, zN uintptr
		isText := true
		switch {
		case th == lib.SQLITE_BLOB && tn == lib.SQLITE_BLOB:
			zH, zN = lib.Xsqlite3_value_blob(tls, h), lib.Xsqlite3_value_blob(tls, n)
			isText = false
		case th != lib.SQLITE_BLOB && tn != lib.SQLITE_BLOB:
			zH, zN = lib.Xsqlite3_value_text(tls, h), lib.Xsqlite3_value_text(tls, n)
		default:
			pC1 = lib.Xsqlite3_value_dup(tls, h)
			if zH = lib.Xsqlite3_value_text(tls, pC1); zH == 0 {
				lib.Xsqlite3_result_error_nomem(tls, ctx)
				return
			}
			nH = lib.Xsqlite3_value_bytes(tls, pC1)
			pC2 = lib.Xsqlite3_value_dup(tls, n)
			if zN = lib.Xsqlite3_value_text(tls, pC2); zN == 0 {
				lib.Xsqlite3_result_error_nomem(tls, ctx)
				return
			}
			nN = lib.Xsqlite3_value_bytes(tls, pC2)
		}
		if zN == 0 || nH != 0 && zH == 0 {
			lib.Xsqlite3_result_error_nomem(tls, ctx)
			return
		}
		N = instrPos(cBytes(zH, nH), cBytes(zN, nN), isText)
	}
	lib.Xsqlite3_result_int(tls, ctx, N)
}

// instrPos is instr()'s result for a non-empty needle: SQLite tries the
// first byte of haystack, then (text) every byte that is not a UTF-8
// continuation byte (b&0xc0 == 0x80) or (blob) every byte, and returns 1
// plus the number of positions it moved past before the first match, or
// 0. A byte-wise match at a continuation byte past the first is not
// tried; such a match exists only if the needle itself starts with a
// continuation byte, in which case only position 0 can match.
func instrPos(hay, needle []byte, isText bool) int32 {
	if len(needle) > len(hay) {
		return 0
	}
	if isText && needle[0]&0xc0 == 0x80 {
		if bytes.Equal(hay[:len(needle)], needle) {
			return 1
		}
		return 0
	}
	p := newSearcher(needle).next(hay, 0)
	if p < 0 {
		return 0
	}
	if !isText {
		return int32(p + 1)
	}
	n := int32(1)
	for _, b := range hay[1 : p+1] {
		if b&0xc0 != 0x80 {
			n++
		}
	}
	return n
}

// replaceFunc is SQLite's replaceFunc with a linear search: the same
// argument handling (NULL X, Y or Z gives NULL; a Y whose first byte is 0,
// the empty string, gives X as text, before Z is read), left-to-right
// non-overlapping byte-wise replacement, and "string or blob too big"
// (sqlite3_result_error_toobig) when len X + 1 or the result exceeds the
// connection's SQLITE_LIMIT_LENGTH. The result is built in memory from
// sqlite3_malloc64 (so a v5 entry is charged for it, valuemem.go) and
// handed to SQLite without a copy, as SQLite's own does.
func replaceFunc(tls *libc.TLS, ctx uintptr, argc int32, argv uintptr) {
	db := lib.Xsqlite3_context_db_handle(tls, ctx)
	a0, a1, a2 := funcArg(argv, 0), funcArg(argv, 1), funcArg(argv, 2)
	zStr := lib.Xsqlite3_value_text(tls, a0)
	if zStr == 0 {
		return
	}
	nStr := lib.Xsqlite3_value_bytes(tls, a0)
	zPat := lib.Xsqlite3_value_text(tls, a1)
	if zPat == 0 {
		return
	}
	if *(*byte)(cptr(zPat)) == 0 {
		lib.Xsqlite3_result_text(tls, ctx, zStr, nStr, ^uintptr(0)) // SQLITE_TRANSIENT
		return
	}
	nPat := lib.Xsqlite3_value_bytes(tls, a1)
	zRep := lib.Xsqlite3_value_text(tls, a2)
	if zRep == 0 {
		return
	}
	nRep := lib.Xsqlite3_value_bytes(tls, a2)
	limit := int64(lib.Xsqlite3_limit(tls, db, lib.SQLITE_LIMIT_LENGTH, -1))
	if int64(nStr)+1 > limit {
		lib.Xsqlite3_result_error_toobig(tls, ctx)
		return
	}
	str, pat, rep := cBytes(zStr, nStr), cBytes(zPat, nPat), cBytes(zRep, nRep)
	s := newSearcher(pat)
	outLen := int64(nStr)
	if nRep > nPat {
		var count int64
		for i := 0; ; {
			p := s.next(str, i)
			if p < 0 {
				break
			}
			count++
			i = p + len(pat)
		}
		outLen += count * int64(nRep-nPat)
		if outLen > limit {
			lib.Xsqlite3_result_error_toobig(tls, ctx)
			return
		}
	}
	size := max(outLen, int64(nStr)) + 1
	zOut := lib.Xsqlite3_malloc64(tls, uint64(size))
	if zOut == 0 {
		lib.Xsqlite3_result_error_nomem(tls, ctx)
		return
	}
	out := unsafe.Slice((*byte)(cptr(zOut)), size)
	j, i := 0, 0
	for {
		p := s.next(str, i)
		if p < 0 {
			break
		}
		j += copy(out[j:], str[i:p])
		j += copy(out[j:], rep)
		i = p + len(pat)
	}
	j += copy(out[j:], str[i:])
	out[j] = 0
	lib.Xsqlite3_result_text(tls, ctx, zOut, int32(j), sqliteFree)
}

// shortNeedle is the longest needle searched with bytes.Index. Whatever
// algorithm bytes.Index picks (a vectorized comparison at each candidate
// position, or Rabin-Karp comparing on each hash hit), it compares at most
// len(needle) bytes per position of the haystack, so for needles of at
// most 64 bytes the search is linear. Rabin-Karp's hash is fixed, so for a
// longer needle an adversary can make it collide at every position
// (O(len X * len Y) again): those use Knuth-Morris-Pratt.
const shortNeedle = 64

// searcher finds the leftmost occurrence of a non-empty needle at or
// after a position, in time linear in the bytes it passes.
type searcher struct {
	needle []byte
	fail   []int32 // KMP failure function, for needles over shortNeedle
}

func newSearcher(needle []byte) *searcher {
	s := &searcher{needle: needle}
	if len(needle) > shortNeedle {
		f := make([]int32, len(needle))
		k := int32(0)
		for i := 1; i < len(needle); i++ {
			for k > 0 && needle[i] != needle[k] {
				k = f[k-1]
			}
			if needle[i] == needle[k] {
				k++
			}
			f[i] = k
		}
		s.fail = f
	}
	return s
}

// next returns the position of the first occurrence of the needle in hay
// starting at or after from, or -1. Every call restarts the search: for
// non-overlapping matches from the end of the previous one, every byte is
// scanned once.
func (s *searcher) next(hay []byte, from int) int {
	nd := s.needle
	if from > len(hay)-len(nd) {
		return -1
	}
	if s.fail == nil {
		if i := bytes.Index(hay[from:], nd); i >= 0 {
			return from + i
		}
		return -1
	}
	k := int32(0)
	for i := from; i < len(hay); i++ {
		if k == 0 && hay[i] != nd[0] {
			// Skip to the next candidate first byte.
			o := bytes.IndexByte(hay[i:], nd[0])
			if o < 0 {
				return -1
			}
			i += o
		}
		for k > 0 && hay[i] != nd[k] {
			k = s.fail[k-1]
		}
		if hay[i] == nd[k] {
			k++
		}
		if int(k) == len(nd) {
			return i - len(nd) + 1
		}
	}
	return -1
}
