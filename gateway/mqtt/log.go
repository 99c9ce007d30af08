package mqtt

import (
	"context"
	"log/slog"
)

// minLevel drops records below a level; mochi logs every connection at info,
// which drowns vigil's own logs with a fleet connected. It also names the
// records mochi's listeners log without a message: a connection that
// failed (a TLS handshake, a refused CONNECT) or ended with an error.
type minLevel struct {
	slog.Handler
	min slog.Level
}

// Enabled drops records below the minimum level.
func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

// WithAttrs keeps the minimum level on the derived handler.
func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}

// WithGroup keeps the minimum level on the derived handler.
func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}

// connectionFailed is the message of mochi's records that have none.
const connectionFailed = "mqtt connection failed or ended with an error"

// Handle gives a record without a message one before handing it on.
func (h minLevel) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "" {
		r.Message = connectionFailed
	}
	return h.Handler.Handle(ctx, r)
}
