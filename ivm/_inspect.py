"""A JavaScript ``inspect(value)`` in the style of node's ``util.inspect``, evaluated inside
an isolate, so that any value (functions, cycles, Maps, errors, proxies...) becomes text
there and only a string leaves it. The CLI prints results with it.

It never runs the value's own code on purpose: no getters (a getter shows as ``[Getter]``),
no ``toString``/``valueOf``/``Symbol.toPrimitive``, no Proxy traps it can avoid (a Proxy
shows as what its target looks like through the trap-free parts of the API), and its
output is bounded (depth, items per container, string length, total length).
"""

from __future__ import annotations

__all__ = ["INSPECT_JS"]

#: Evaluates to a function ``(value, options) => string``; options: ``depth`` (default 2),
#: ``maxItems`` (default 100), ``maxString`` (default 10000), ``maxLength`` (default 1e6),
#: ``top`` ("raw": a string at the top level is printed as it is, as ``node -p`` does).
INSPECT_JS = r"""
(() => {
  'use strict';
  const O = Object, A = Array, R = Reflect;
  const getProto = O.getPrototypeOf, ownKeys = R.ownKeys, getDesc = O.getOwnPropertyDescriptor;
  const isArray = A.isArray, fnToString = Function.prototype.toString;
  const call = (f, self, ...args) => R.apply(f, self, args);
  const mapEntries = Map.prototype.entries, setValues = Set.prototype.values;
  const mapSize = getDesc(Map.prototype, 'size').get, setSize = getDesc(Set.prototype, 'size').get;
  const dateToISO = Date.prototype.toISOString, dateGetTime = Date.prototype.getTime;
  const regexpToString = RegExp.prototype.toString;
  const taProto = getProto(Uint8Array.prototype);
  const taTag = getDesc(taProto, Symbol.toStringTag).get;
  const taLength = getDesc(taProto, 'length').get;
  const abByteLength = getDesc(ArrayBuffer.prototype, 'byteLength').get;
  const symToString = Symbol.prototype.toString;
  const errorToString = Error.prototype.toString;
  const jsonStringify = JSON.stringify;

  function is(f, v) { try { call(f, v); return true; } catch { return false; } }
  const isMap = v => is(mapSize, v), isSet = v => is(setSize, v);
  const isDate = v => is(dateGetTime, v);
  const isRegExp = v => { try { call(regexpToString, v); return getDesc(v, 'lastIndex') !== undefined; } catch { return false; } };
  const typedTag = v => { try { return call(taTag, v); } catch { return undefined; } };
  const isArrayBuffer = v => is(abByteLength, v);
  const isError = v => { try { return v instanceof Error; } catch { return false; } };

  // node's quoting (as libivm's console, host_inspect.cc): single quotes, unless the
  // string has some and no double quotes (then double), or has both (then backticks).
  const named = { '\b': '\\b', '\t': '\\t', '\n': '\\n', '\v': '\\x0B', '\f': '\\f', '\r': '\\r' };
  function quote(s, max) {
    let t = s.length > max ? s.slice(0, max) : s;
    const q = !t.includes("'") ? "'" : !t.includes('"') ? '"' : !t.includes('`') ? '`' : "'";
    t = q + t.replace(/[\\'"`]/g, c => c === q || c === '\\' ? '\\' + c : c)
             .replace(/[\x00-\x1f\x7f]/g, c => named[c] ||
               '\\x' + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')) + q;
    return s.length > max ? t + `... ${s.length - max} more characters` : t;
  }
  function keyText(k) {
    if (typeof k === 'symbol') return '[' + call(symToString, k) + ']';
    return /^[A-Za-z_$][\w$]*$/.test(k) ? k : quote(k, 1000);
  }
  function fnName(f) {
    let name = '';
    try { const d = getDesc(f, 'name'); if (d && typeof d.value === 'string') name = d.value; } catch {}
    let cls = false;
    try { cls = /^class\b/.test(call(fnToString, f)); } catch {}
    if (cls) return name ? `[class ${name}]` : '[class (anonymous)]';
    const kind = ctorName(f);   // AsyncFunction, GeneratorFunction, AsyncGeneratorFunction
    const type = kind && /^(Async)?(Generator)?Function$/.test(kind) ? kind : 'Function';
    return name ? `[${type}: ${name}]` : `[${type} (anonymous)]`;
  }
  function ctorName(v) {
    try {
      let p = getProto(v);
      if (p === null) return null;
      const d = getDesc(p, 'constructor');
      if (d && typeof d.value === 'function') {
        const n = getDesc(d.value, 'name');
        if (n && typeof n.value === 'string') return n.value;
      }
    } catch {}
    return '';
  }

  return function inspect(value, options) {
    const opts = options || {};
    const maxDepth = opts.depth === undefined ? 2 : opts.depth;
    const maxItems = opts.maxItems || 100, maxString = opts.maxString || 10000;
    const maxLength = opts.maxLength || 1e6;
    const seen = [], circular = new Map();
    let budget = maxLength;

    function fmt(v, depth) {
      if (budget <= 0) return '...';
      switch (typeof v) {
        case 'undefined': return 'undefined';
        case 'boolean': return String(v);
        case 'number': return O.is(v, -0) ? '-0' : String(v);
        case 'bigint': return String(v) + 'n';
        case 'string': return quote(v, maxString);
        case 'symbol': return call(symToString, v);
      }
      if (v === null) return 'null';
      if (seen.includes(v)) {
        if (!circular.has(v)) circular.set(v, circular.size + 1);
        return `[Circular *${circular.get(v)}]`;
      }
      const text = fmtObject(v, depth);
      budget -= text.length;
      return text;
    }

    function items(v, depth, list, open, close, prefix) {
      if (depth > maxDepth) return prefix ? `[${prefix.trim()}]` : (isArray(v) ? '[Array]' : '[Object]');
      seen.push(v);
      const parts = [];
      try {
        for (const part of list()) {
          if (parts.length >= maxItems) { parts.push('...'); break; }
          parts.push(part);
          if (budget <= 0) break;
        }
      } finally { seen.pop(); }
      const ref = circular.has(v) ? `<ref *${circular.get(v)}> ` : '';
      if (!parts.length) return ref + prefix + open + close;
      const one = ref + prefix + open + ' ' + parts.join(', ') + ' ' + close;
      if (one.length <= 72 && !one.includes('\n')) return one;
      const pad = '  '.repeat(depth + 1);
      return ref + prefix + open + '\n' + pad + parts.join(',\n' + pad) + '\n' + '  '.repeat(depth) + close;
    }

    function* props(v, depth, skipIndices) {
      let keys;
      try { keys = ownKeys(v); } catch { return; }
      for (const k of keys) {
        if (skipIndices && typeof k === 'string' && /^(0|[1-9]\d*)$/.test(k)) continue;
        let d;
        try { d = getDesc(v, k); } catch { continue; }
        if (!d || !d.enumerable) continue;
        let shown;
        if ('value' in d) shown = fmt(d.value, depth + 1);
        else shown = d.get ? (d.set ? '[Getter/Setter]' : '[Getter]') : '[Setter]';
        yield keyText(k) + ': ' + shown;
      }
    }

    function fmtObject(v, depth) {
      if (typeof v === 'function') {
        const base = fnName(v);
        let extra = false;
        try { extra = ownKeys(v).some(k => { const d = getDesc(v, k); return d && d.enumerable; }); } catch {}
        return extra ? items(v, depth, () => props(v, depth, false), '{', '}', base + ' ') : base;
      }
      if (isArray(v)) {
        return items(v, depth, function* () {
          let n = 0;
          try { n = v.length; } catch {}
          let holes = 0;
          for (let i = 0; i < n; i++) {
            let d;
            try { d = getDesc(v, String(i)); } catch {}
            if (!d) { holes++; continue; }
            if (holes) { yield `<${holes} empty item${holes > 1 ? 's' : ''}>`; holes = 0; }
            yield 'value' in d ? fmt(d.value, depth + 1) : '[Getter]';
          }
          if (holes) yield `<${holes} empty item${holes > 1 ? 's' : ''}>`;
          yield* props(v, depth, true);
        }, '[', ']', '');
      }
      if (isError(v)) {
        let stack;
        try { const d = getDesc(v, 'stack'); stack = d && typeof d.value === 'string' ? d.value : undefined; } catch {}
        if (stack === undefined) { try { stack = '[' + call(errorToString, v) + ']'; } catch { stack = '[Error]'; } }
        return stack.length > maxString ? stack.slice(0, maxString) + '...' : stack;
      }
      if (isMap(v)) {
        const size = call(mapSize, v);
        return items(v, depth, function* () {
          for (const [k, val] of call(mapEntries, v)) yield fmt(k, depth + 1) + ' => ' + fmt(val, depth + 1);
        }, '{', '}', `Map(${size}) `);
      }
      if (isSet(v)) {
        const size = call(setSize, v);
        return items(v, depth, function* () {
          for (const x of call(setValues, v)) yield fmt(x, depth + 1);
        }, '{', '}', `Set(${size}) `);
      }
      if (isDate(v)) {
        try { return call(dateToISO, v); } catch { return 'Invalid Date'; }
      }
      if (isRegExp(v)) return call(regexpToString, v);
      const tag = typedTag(v);
      if (tag !== undefined) {
        const n = call(taLength, v);
        return items(v, depth, function* () {
          for (let i = 0; i < n; i++) yield fmt(v[i], depth + 1);
        }, '[', ']', `${tag}(${n}) `);
      }
      if (isArrayBuffer(v)) return `ArrayBuffer { byteLength: ${call(abByteLength, v)} }`;
      const name = ctorName(v);
      const prefix = name === null ? '[Object: null prototype] ' : (name && name !== 'Object' ? name + ' ' : '');
      return items(v, depth, () => props(v, depth, false), '{', '}', prefix);
    }

    if (opts.top === 'raw' && typeof value === 'string') {
      return value.length > maxLength ? value.slice(0, maxLength) + '...' : value;
    }
    const out = fmt(value, 0);
    return out.length > maxLength ? out.slice(0, maxLength) + '...' : out;
  };
})()
"""
