package reactor

import (
	"fmt"

	"github.com/dws-gateway/dws/internal/logx"
)

// gnetLogger sends gnet's own warnings and errors to the dws JSON log and
// drops its chatter, so every log line has one shape.
type gnetLogger struct{}

func (gnetLogger) Debugf(string, ...any) {}
func (gnetLogger) Infof(string, ...any)  {}
func (gnetLogger) Warnf(f string, a ...any) {
	logx.L().Warn("gnet", "msg_detail", fmt.Sprintf(f, a...))
}
func (gnetLogger) Errorf(f string, a ...any) {
	logx.L().Error("gnet", "msg_detail", fmt.Sprintf(f, a...))
}
func (gnetLogger) Fatalf(f string, a ...any) {
	logx.L().Error("gnet fatal", "msg_detail", fmt.Sprintf(f, a...))
}
