package store

import (
	"bytes"
	"context"
	"database/sql/driver"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	duckdb "github.com/duckdb/duckdb-go/v2"
)

// Column describes one column of a query result.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Result is the answer to a read-only query.
type Result struct {
	Columns []Column `json:"columns"`
	Rows    [][]any  `json:"rows"`
	// Truncated is true when the query had more rows than the limit.
	Truncated bool `json:"truncated,omitempty"`
}

// readOnly lists the statement types Query runs.
var readOnly = map[duckdb.StmtType]bool{
	duckdb.STATEMENT_TYPE_SELECT:  true,
	duckdb.STATEMENT_TYPE_EXPLAIN: true,
	duckdb.STATEMENT_TYPE_PRAGMA:  false,
}

// Query runs one read-only SQL statement and returns at most limit rows.
// DuckDB classifies the statement before it runs; anything but a query
// (SELECT, including DESCRIBE/SHOW/SUMMARIZE, which DuckDB plans as one) or
// EXPLAIN is refused with ErrReadOnly, and so is more than one statement.
func (s *Store) Query(ctx context.Context, query string, limit int) (*Result, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	defer conn.Close()
	var res *Result
	err = conn.Raw(func(dc any) error {
		ds, err := prepareReadOnly(dc, query)
		if err != nil {
			return err
		}
		if limit > 0 {
			ds = bounded(dc, ds, query, limit)
		}
		defer ds.Close()
		rows, err := ds.QueryContext(ctx, nil)
		if err != nil {
			return err
		}
		defer rows.Close()
		res, err = collect(rows, limit)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	return res, nil
}

// bounded returns the statement that computes no more of query's answer
// than limit rows and one to tell it was cut: the query as a subquery under
// LIMIT. DuckDB hands the driver a query's whole answer, computed and held
// in memory, before the first row can be read, so a query of a large
// table answered with the first 10,000 rows held all of them first
// (SELECT * FROM range(300000000) with limit 10: 4 s and 2.4 GB). A
// statement that cannot stand in a subquery (a trailing semicolon, EXPLAIN)
// keeps ds. The subquery's order is kept (DuckDB preserves it under LIMIT).
func bounded(dc any, ds *duckdb.Stmt, query string, limit int) *duckdb.Stmt {
	if typ, err := ds.StatementType(); err != nil || typ != duckdb.STATEMENT_TYPE_SELECT {
		return ds
	}
	// The query on lines of its own, so that a comment at its end ends
	// with its line; the wrapped text is checked again like any query.
	wrapped, err := prepareReadOnly(dc, "SELECT * FROM (\n"+query+"\n) LIMIT "+strconv.Itoa(limit+1))
	if err != nil {
		return ds
	}
	ds.Close()
	return wrapped
}

// prepareReadOnly prepares query on the driver connection dc if it is
// exactly one read-only statement, and runs nothing. (The driver's
// PrepareContext would run every statement before the last one to
// prepare the last, so "DELETE ...; SELECT 1" would delete.)
func prepareReadOnly(dc any, query string) (*duckdb.Stmt, error) {
	c, ok := dc.(driver.Conn)
	if !ok {
		return nil, errors.New("not a database connection")
	}
	st, err := c.Prepare(query) // one statement only; runs nothing
	if err != nil {
		if strings.Contains(err.Error(), "multi-statement") {
			return nil, ErrOneStatement
		}
		return nil, err
	}
	ds, ok := st.(*duckdb.Stmt)
	if !ok {
		st.Close()
		return nil, errors.New("not a duckdb statement")
	}
	typ, err := ds.StatementType()
	if err == nil && (!readOnly[typ] || typ == duckdb.STATEMENT_TYPE_EXPLAIN && !plainExplain(query)) {
		err = ErrReadOnly
	}
	if err != nil {
		ds.Close()
		return nil, err
	}
	return ds, nil
}

// plainExplain reports whether query, which DuckDB classified as EXPLAIN,
// only explains: EXPLAIN ANALYZE runs the statement it explains (an
// UPDATE, a DELETE, a SET), and EXPLAIN with options in parentheses may ask
// for that too, so both are refused. It reads the first two words of the
// text past white space and comments.
func plainExplain(query string) bool {
	rest := skipSpace(query)
	if len(rest) < 7 || !strings.EqualFold(rest[:7], "EXPLAIN") {
		return false
	}
	rest = skipSpace(rest[7:])
	if rest == "" || rest[0] == '(' {
		return false
	}
	end := strings.IndexFunc(rest, func(r rune) bool { return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || r == '_') })
	if end < 0 {
		end = len(rest)
	}
	word := rest[:end]
	return !strings.EqualFold(word, "ANALYZE") && !strings.EqualFold(word, "ANALYSE")
}

// skipSpace returns s past its leading white space and SQL comments (--
// to the end of the line, /* to */).
func skipSpace(s string) string {
	for {
		t := strings.TrimLeft(s, " \t\r\n\f\v")
		switch {
		case strings.HasPrefix(t, "--"):
			if i := strings.IndexByte(t, '\n'); i >= 0 {
				s = t[i+1:]
				continue
			}
			return ""
		case strings.HasPrefix(t, "/*"):
			if i := strings.Index(t[2:], "*/"); i >= 0 {
				s = t[2+i+2:]
				continue
			}
			return ""
		}
		return t
	}
}

// collect reads at most limit rows (every row when limit is 0) into a
// Result, each value made one that encoding/json renders faithfully (see
// jsonValue), with the help of the column's DuckDB type where the value
// alone cannot tell.
func collect(rows driver.Rows, limit int) (*Result, error) {
	names := rows.Columns()
	res := &Result{Columns: make([]Column, len(names)), Rows: [][]any{}}
	types := make([]*sqlType, len(names))
	typed, _ := rows.(driver.RowsColumnTypeDatabaseTypeName)
	for i, n := range names {
		res.Columns[i].Name = n
		if typed != nil {
			res.Columns[i].Type = typed.ColumnTypeDatabaseTypeName(i)
			types[i] = parseType(res.Columns[i].Type)
		}
	}
	for {
		vals := make([]driver.Value, len(names))
		if err := rows.Next(vals); err != nil {
			if errors.Is(err, io.EOF) {
				return res, nil
			}
			return nil, err
		}
		if limit > 0 && len(res.Rows) == limit {
			res.Truncated = true
			return res, nil
		}
		row := make([]any, len(vals))
		for i, v := range vals {
			row[i] = jsonValue(v, types[i])
		}
		res.Rows = append(res.Rows, row)
	}
}

// jsonValue turns a DuckDB value of type t (nil when unknown) into one
// encoding/json renders faithfully, at any depth of LISTs, ARRAYs,
// STRUCTs, MAPs and UNIONs:
//
//   - a DOUBLE or FLOAT that is not finite becomes the string "NaN",
//     "Infinity" or "-Infinity" (JSON has no such numbers; these are the
//     spellings DuckDB's to_json uses, and what JavaScript's Number,
//     Python's float, pandas' astype(float) and Go's strconv.ParseFloat
//     read back), so that it stays apart from NULL (null);
//   - a UUID becomes its canonical text, 8-4-4-4-12 lowercase hex digits
//     (the driver returns its 16 bytes, as it would a BLOB's: t tells them
//     apart);
//   - a BLOB (or GEOMETRY, in its binary form) becomes its bytes in
//     standard base64 (RFC 4648, with padding), whatever they are;
//   - a MAP becomes a JSON object in the map's order, each key as its text
//     (a string as itself, any other key as its JSON), as DuckDB's to_json
//     renders one;
//   - a timestamp becomes RFC 3339 text in UTC.
func jsonValue(v any, t *sqlType) any {
	switch x := v.(type) {
	case float64:
		if name, ok := nonFinite(x); ok {
			return name
		}
	case float32:
		if name, ok := nonFinite(float64(x)); ok {
			return name
		}
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case []byte:
		if t.is("UUID") && len(x) == len(duckdb.UUID{}) {
			u := duckdb.UUID(x)
			return u.String()
		}
		return base64.StdEncoding.EncodeToString(x)
	case []any: // LIST or ARRAY
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonValue(e, t.element())
		}
		return out
	case map[string]any: // STRUCT (or a JSON object)
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonValue(e, t.field(k))
		}
		return out
	case duckdb.OrderedMap:
		return jsonMap(x, t)
	case duckdb.Union:
		return duckdb.Union{Tag: x.Tag, Value: jsonValue(x.Value, t.field(x.Tag))}
	case duckdb.UUID:
		return x.String()
	case fmt.Stringer:
		return x.String()
	}
	return v
}

// nonFinite returns how DuckDB's to_json spells f when f is not a finite
// number, and false when it is one.
func nonFinite(f float64) (string, bool) {
	switch {
	case math.IsNaN(f):
		return "NaN", true
	case math.IsInf(f, 1):
		return "Infinity", true
	case math.IsInf(f, -1):
		return "-Infinity", true
	}
	return "", false
}

// jsonMap converts a DuckDB MAP of type t into a JSON object that keeps its
// order.
func jsonMap(m duckdb.OrderedMap, t *sqlType) jsonObject {
	var keyType, valueType *sqlType
	if t != nil {
		keyType, valueType = t.key, t.elem
	}
	keys, values := m.Keys(), m.Values()
	obj := make(jsonObject, len(keys))
	for i, k := range keys {
		obj[i].value = jsonValue(values[i], valueType)
		switch kv := jsonValue(k, keyType).(type) {
		case string:
			obj[i].key = kv
		default:
			text, err := json.Marshal(kv)
			if err != nil {
				// Not reached: jsonValue's values all encode.
				text = []byte(fmt.Sprint(kv))
			}
			obj[i].key = string(text)
		}
	}
	return obj
}

// jsonObject is a JSON object whose members keep their order.
type jsonObject []jsonMember

type jsonMember struct {
	key   string
	value any
}

// MarshalJSON encodes o as a JSON object, its members in order.
func (o jsonObject) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		key, err := json.Marshal(m.key)
		if err != nil {
			return nil, err
		}
		value, err := json.Marshal(m.value)
		if err != nil {
			return nil, err
		}
		b.Write(key)
		b.WriteByte(':')
		b.Write(value)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// sqlType is what jsonValue needs of a DuckDB type, read from its name as
// the driver spells it: UUID, BLOB, UUID[], BLOB[3], STRUCT("id" UUID,
// "body" BLOB), MAP(VARCHAR, BLOB), UNION("u" UUID, "b" BLOB), and so on.
// The driver returns a UUID as its 16 bytes, as it returns a BLOB, so only
// the type tells them apart, inside a LIST or a STRUCT as well.
type sqlType struct {
	// name is UUID, BLOB, LIST (for a LIST or an ARRAY), STRUCT, MAP,
	// UNION or the name of any other type.
	name string
	// elem is a LIST's element type, or a MAP's value type.
	elem *sqlType
	// key is a MAP's key type.
	key *sqlType
	// fields has the type of each field of a STRUCT, or of each member
	// of a UNION.
	fields map[string]*sqlType
}

// is reports whether t is known to be the type called name.
func (t *sqlType) is(name string) bool { return t != nil && t.name == name }

// element returns the element type of a LIST, or nil.
func (t *sqlType) element() *sqlType {
	if t == nil || t.name != "LIST" {
		return nil
	}
	return t.elem
}

// field returns the type of a STRUCT's field or a UNION's member, or nil.
func (t *sqlType) field(name string) *sqlType {
	if t == nil {
		return nil
	}
	return t.fields[name]
}

// parseType reads a type name as the driver spells it, or returns nil for
// one it cannot read: jsonValue then goes by the values alone.
func parseType(name string) *sqlType {
	t, rest, ok := parseTypePrefix(name)
	if !ok || rest != "" {
		return nil
	}
	return t
}

// parseTypePrefix reads the type name at the start of s and returns it
// with the rest of s.
func parseTypePrefix(s string) (*sqlType, string, bool) {
	end := strings.IndexFunc(s, func(r rune) bool { return !('A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_') })
	if end < 0 {
		end = len(s)
	}
	if end == 0 {
		return nil, s, false
	}
	t := &sqlType{name: s[:end]}
	s = s[end:]
	if rest, ok := strings.CutPrefix(s, "("); ok {
		s = rest
		switch t.name {
		case "STRUCT", "UNION":
			t.fields = map[string]*sqlType{}
			for {
				name, rest, ok := parseQuoted(s)
				if !ok {
					return nil, s, false
				}
				if rest, ok = strings.CutPrefix(rest, " "); !ok {
					return nil, s, false
				}
				ft, rest, ok := parseTypePrefix(rest)
				if !ok {
					return nil, s, false
				}
				t.fields[name] = ft
				if s, ok = strings.CutPrefix(rest, ", "); !ok {
					s = rest
					break
				}
			}
		case "MAP":
			key, rest, ok := parseTypePrefix(s)
			if !ok {
				return nil, s, false
			}
			if rest, ok = strings.CutPrefix(rest, ", "); !ok {
				return nil, s, false
			}
			value, rest, ok := parseTypePrefix(rest)
			if !ok {
				return nil, s, false
			}
			t.key, t.elem, s = key, value, rest
		default: // DECIMAL(18,3): parameters jsonValue has no use for
			i := strings.IndexByte(s, ')')
			if i < 0 {
				return nil, s, false
			}
			s = s[i:]
		}
		if s, ok = strings.CutPrefix(s, ")"); !ok {
			return nil, s, false
		}
	}
	// UUID[] is a LIST of UUIDs, UUID[3] an ARRAY of three: both are
	// lists of values to jsonValue.
	for strings.HasPrefix(s, "[") {
		i := strings.IndexByte(s, ']')
		if i < 0 {
			return nil, s, false
		}
		t, s = &sqlType{name: "LIST", elem: t}, s[i+1:]
	}
	return t, s, true
}

// parseQuoted reads the double-quoted name at the start of s, in which
// a double quote is written twice, and returns it with the rest of s.
func parseQuoted(s string) (string, string, bool) {
	if !strings.HasPrefix(s, `"`) {
		return "", s, false
	}
	var name strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] != '"' {
			name.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '"' {
			name.WriteByte('"')
			i++
			continue
		}
		return name.String(), s[i+1:], true
	}
	return "", s, false
}

// QueryArrow runs one read-only SQL statement, refused as Query refuses
// it, and hands its result to fn as a reader of Arrow record batches: no
// row limit. DuckDB computes the whole result before the first batch can
// be read (the driver asks for it whole), so a large one is held in memory
// until fn has read it. The reader and its batches are valid only during
// fn; fn must check the reader's Err after its last Next.
func (s *Store) QueryArrow(ctx context.Context, query string, fn func(array.RecordReader) error) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		ds, err := prepareReadOnly(dc, query)
		if err != nil {
			return err
		}
		ds.Close()
		ar, err := duckdb.NewArrowFromConn(dc.(driver.Conn))
		if err != nil {
			return err
		}
		// The same text, now known to be one read-only statement.
		rdr, err := ar.QueryContext(ctx, query)
		if err != nil {
			return err
		}
		defer rdr.Release()
		return fn(rdr)
	})
	if err != nil {
		return fmt.Errorf("query: %w", err)
	}
	return nil
}
