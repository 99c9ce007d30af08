package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/csv"
	"github.com/apache/arrow-go/v18/arrow/ipc"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/store"
)

func serverFlag(fs interface {
	String(name, value, usage string) *string
}) (*string, *string) {
	url := fs.String("server", envOr("VIGIL_SERVER", "http://127.0.0.1:8080"), "vigil server URL (env VIGIL_SERVER)")
	token := fs.String("api-token", envOr("VIGIL_API_TOKEN", ""), "API bearer token (env VIGIL_API_TOKEN)")
	return url, token
}

func runQuery(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("query", stderr)
	url, token := serverFlag(fs)
	format := fs.String("format", "table", "output: table or json (at most --limit rows), or every row as csv or arrow (an Arrow IPC file, which pyarrow, pandas and polars read)")
	limit := fs.Int("limit", api.DefaultRowLimit, "most rows to return as table or json (bound csv and arrow with LIMIT in the SQL)")
	out := fs.String("out", "", "write to this file instead of standard output (needed for arrow); it appears only once every row is written")
	// Flags may also follow the SQL: vigil query "SELECT ..." --format csv.
	operands, err := parseOperands(fs, args)
	if err != nil {
		return err
	}
	if len(operands) == 0 {
		return errors.New(`give the SQL as an argument, e.g. vigil query "SELECT count(*) FROM readings"`)
	}
	sql := strings.Join(operands, " ")
	c := &api.Client{BaseURL: *url, Token: *token}
	switch *format {
	case "table", "json":
		res, err := c.Query(ctx, sql, *limit)
		if err != nil {
			return err
		}
		return writeOut(*out, stdout, func(w io.Writer) error {
			if *format == "json" {
				return json.NewEncoder(w).Encode(res)
			}
			return printTable(w, res)
		})
	case "csv", "arrow":
		if flagSet(fs, "limit") {
			return fmt.Errorf("--limit bounds table and json output; %s has every row: put a LIMIT in the SQL", *format)
		}
		if *out == "" && *format == "arrow" {
			return errors.New("--format arrow writes a binary file: give it with --out FILE")
		}
		a, err := c.QueryArrowStream(ctx, sql)
		if err != nil {
			return err
		}
		defer a.Close()
		return writeOut(*out, stdout, func(w io.Writer) error { return exportArrow(*format, w, a) })
	default:
		return fmt.Errorf("--format %q: want table, json, csv or arrow", *format)
	}
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// writeOut runs write on standard output, or on a file at path that
// appears under that name only when write has succeeded: a failed query
// never leaves a partial file that looks whole. The file gets the
// permissions os.Create would give it.
func writeOut(path string, stdout io.Writer, write func(io.Writer) error) error {
	if path == "" {
		return write(stdout)
	}
	f, err := createPartial(path)
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // gone after the rename
	bw := bufio.NewWriterSize(f, 1<<20)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// stdoutDash is the writeOut path of an --out flag whose "-" means
// standard output.
func stdoutDash(out string) string {
	if out == "-" {
		return ""
	}
	return out
}

// createPartial creates a new file beside path to be renamed to it, with
// mode 0666 less the umask (os.CreateTemp's files are 0600).
func createPartial(path string) (*os.File, error) {
	for try := 0; ; try++ {
		name := fmt.Sprintf("%s.partial-%d-%d", path, os.Getpid(), try)
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, os.ErrExist) && try < 100 {
			continue
		}
		return f, err
	}
}

// exportArrow writes every batch of an Arrow answer to w as CSV (with a
// header) or as an Arrow IPC file, and fails if the answer ends early.
func exportArrow(format string, w io.Writer, a *api.ArrowAnswer) error {
	var write func(arrow.RecordBatch) error
	var finish func() error
	switch format {
	case "csv":
		cw := csv.NewWriter(w, a.Schema(), csv.WithHeader(true), csv.WithNullWriter(""))
		write, finish = cw.Write, func() error { cw.Flush(); return cw.Error() }
	case "arrow":
		fw, err := ipc.NewFileWriter(w, ipc.WithSchema(a.Schema()))
		if err != nil {
			return err
		}
		write, finish = fw.Write, fw.Close
	}
	for a.Next() {
		if err := write(a.RecordBatch()); err != nil {
			return err
		}
	}
	if err := a.Err(); err != nil {
		return err
	}
	return finish()
}

func printTable(w io.Writer, res *store.Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for i, c := range res.Columns {
		if i > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, c.Name)
	}
	fmt.Fprintln(tw)
	for _, row := range res.Rows {
		for i, v := range row {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, v)
		}
		fmt.Fprintln(tw)
	}
	if res.Truncated {
		fmt.Fprintln(tw, "(truncated: raise --limit)")
	}
	return tw.Flush()
}

func runDevices(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("devices", stderr)
	url, token := serverFlag(fs)
	dataDir := fs.String("data", "", "work on this data directory directly instead of a running server (the server must be stopped)")
	key := fs.String("key", "", "with add: the device key (default: generated)")
	// Flags may also follow the verb and name: vigil devices add dev-1 --key K.
	rest, err := parseOperands(fs, args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return errors.New("say what to do: add NAME | list | disable NAME | enable NAME")
	}
	verb, operands := rest[0], rest[1:]
	reg, closeReg, err := registry(ctx, *dataDir, *url, *token)
	if err != nil {
		return err
	}
	defer closeReg()
	needName := func() (string, error) {
		if len(operands) != 1 {
			return "", fmt.Errorf("%s needs exactly one device name", verb)
		}
		return operands[0], nil
	}
	switch verb {
	case "add":
		name, err := needName()
		if err != nil {
			return err
		}
		d, err := reg.add(ctx, name, *key)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "added %s (id %d)\nkey: %s\n(the key is shown only now; the device connects with client id %q and this key as password)\n", d.Name, d.ID, d.Key, d.Name)
	case "list":
		if len(operands) > 0 {
			return usageError(fs, "unexpected argument %q: usage: vigil devices list", operands[0])
		}
		ds, err := reg.list(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tID\tSTATUS\tCREATED")
		for _, d := range ds {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", d.Name, d.ID, d.Status, d.Created.Format("2006-01-02 15:04:05"))
		}
		return tw.Flush()
	case "disable", "enable":
		name, err := needName()
		if err != nil {
			return err
		}
		st := store.Disabled
		if verb == "enable" {
			st = store.Enabled
		}
		d, err := reg.setStatus(ctx, name, st)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s is %s\n", d.Name, d.Status)
	default:
		return fmt.Errorf("unknown devices command %q: use add, list, disable or enable", verb)
	}
	return nil
}

// deviceRegistry is the device registry either through a server's API or,
// when the server is stopped, directly in its data directory.
type deviceRegistry struct {
	add       func(ctx context.Context, name, key string) (api.NewDevice, error)
	list      func(ctx context.Context) ([]store.Device, error)
	setStatus func(ctx context.Context, name string, st store.DeviceStatus) (store.Device, error)
}

func registry(ctx context.Context, dataDir, url, token string) (deviceRegistry, func(), error) {
	if dataDir == "" {
		c := &api.Client{BaseURL: url, Token: token}
		return deviceRegistry{add: c.AddDevice, list: c.Devices, setStatus: c.SetDeviceStatus}, func() {}, nil
	}
	st, err := store.Open(ctx, dataDir)
	if err != nil {
		return deviceRegistry{}, nil, err
	}
	return deviceRegistry{
		add: func(ctx context.Context, name, key string) (api.NewDevice, error) {
			if key == "" {
				key = store.NewDeviceKey()
			}
			d, err := st.AddDevice(ctx, name, key)
			return api.NewDevice{Device: d, Key: key}, err
		},
		list:      func(context.Context) ([]store.Device, error) { return st.Devices(), nil },
		setStatus: st.SetDeviceStatus,
	}, func() { st.Close() }, nil
}
