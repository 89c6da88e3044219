// Command luahealth runs an Argo CD health script the way Argo CD does (util/lua/lua.go in argoproj/argo-cd):
// gopher-lua with only the base, package and table libraries (no string, no io: Argo CD opens the full libraries
// only with resource.customizations.useOpenLibs), the object as the global `obj`, a one-second timeout, and the
// returned table checked for a known health status.
//
// Usage: luahealth SCRIPT.lua < object.json
//
// It prints {"status": ..., "message": ...} as JSON. A status Argo CD does not know becomes Unknown with Argo
// CD's own message; a script that fails, times out or returns something other than a table exits 1.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// Argo CD's health.HealthStatusCode values (gitops-engine pkg/health) its Lua result may carry.
var validStatus = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

const invalidHealthStatus = "Lua returned an invalid health status"

type result struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: luahealth SCRIPT.lua < object.json")
		os.Exit(2)
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(err)
	}
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var obj map[string]any
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.UseNumber()
	if err := decoder.Decode(&obj); err != nil {
		fail(fmt.Errorf("object: %w", err))
	}
	out, err := run(string(script), obj, time.Second)
	if err != nil {
		fail(err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail(err)
	}
}

func run(script string, obj map[string]any, timeout time.Duration) (result, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return result{}, err
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return result{}, fmt.Errorf("expect table output from Lua script not %s", l.Get(-1).Type().String())
	}
	var out result
	if s, ok := table.RawGetString("status").(lua.LString); ok {
		out.Status = string(s)
	}
	if m, ok := table.RawGetString("message").(lua.LString); ok {
		out.Message = string(m)
	}
	if !validStatus[out.Status] {
		return result{Status: "Unknown", Message: invalidHealthStatus}, nil
	}
	return out, nil
}

// toLua converts decoded JSON to Lua values: objects and arrays to tables (arrays 1-based), numbers to numbers,
// null to nil (the key is absent), as Argo CD does for an unstructured object.
func toLua(l *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case string:
		return lua.LString(x)
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			fail(err)
		}
		return lua.LNumber(f)
	case []any:
		t := l.NewTable()
		for _, item := range x {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.NewTable()
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t.RawSetString(k, toLua(l, x[k]))
		}
		return t
	}
	fail(fmt.Errorf("unexpected JSON value %T", v))
	return lua.LNil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "luahealth:", err)
	os.Exit(1)
}
