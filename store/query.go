package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
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

func collect(rows driver.Rows, limit int) (*Result, error) {
	names := rows.Columns()
	res := &Result{Columns: make([]Column, len(names)), Rows: [][]any{}}
	typed, _ := rows.(driver.RowsColumnTypeDatabaseTypeName)
	for i, n := range names {
		res.Columns[i].Name = n
		if typed != nil {
			res.Columns[i].Type = typed.ColumnTypeDatabaseTypeName(i)
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
			row[i] = jsonValue(v)
		}
		res.Rows = append(res.Rows, row)
	}
}

// jsonValue turns a DuckDB value into one encoding/json renders faithfully.
func jsonValue(v any) any {
	switch x := v.(type) {
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case []byte:
		return string(x)
	case duckdb.UUID:
		return x.String()
	case fmt.Stringer:
		return x.String()
	}
	return v
}

// QueryArrow runs one read-only SQL statement, refused as Query refuses
// it, and hands its result to fn as a reader of Arrow record batches,
// fetched from DuckDB as fn reads them: no row limit, and no more than a
// batch in memory at a time. The reader and its batches are valid only
// during fn; fn must check the reader's Err after its last Next.
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
