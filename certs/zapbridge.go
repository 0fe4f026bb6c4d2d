package certs

import (
	"github.com/rs/zerolog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapBridge is a zapcore.Core that writes certmagic's zap entries as zerolog
// events, so the gateway has one log stream in one format.
//
// certmagic logs its routine steps (locks, cache hits, "obtaining
// certificate") at info; the bridge demotes those to debug, because the
// events that matter at info (obtained, renewed, failed) are logged by the
// Manager itself from certmagic's event hook. Warnings and errors pass
// through at their own level.
type zapBridge struct {
	log    zerolog.Logger
	fields []zapcore.Field
}

func newZapLogger(log zerolog.Logger) *zap.Logger {
	return zap.New(&zapBridge{log: log})
}

func zerologLevel(l zapcore.Level) zerolog.Level {
	switch {
	case l <= zapcore.InfoLevel:
		return zerolog.DebugLevel
	case l == zapcore.WarnLevel:
		return zerolog.WarnLevel
	default:
		return zerolog.ErrorLevel
	}
}

func (b *zapBridge) Enabled(l zapcore.Level) bool {
	lvl := zerologLevel(l)
	return lvl >= b.log.GetLevel() && lvl >= zerolog.GlobalLevel()
}

func (b *zapBridge) With(fields []zapcore.Field) zapcore.Core {
	all := make([]zapcore.Field, 0, len(b.fields)+len(fields))
	all = append(all, b.fields...)
	all = append(all, fields...)
	return &zapBridge{log: b.log, fields: all}
}

func (b *zapBridge) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if b.Enabled(e.Level) {
		return ce.AddCore(e, b)
	}
	return ce
}

func (b *zapBridge) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range b.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	logger := "certmagic"
	if e.LoggerName != "" {
		logger += "." + e.LoggerName
	}
	b.log.WithLevel(zerologLevel(e.Level)).Str("logger", logger).Fields(enc.Fields).Msg(e.Message)
	return nil
}

func (b *zapBridge) Sync() error { return nil }
