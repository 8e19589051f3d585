// A node-ari-client benchmark consumer of ari-mock's bench control contract
// (ari-testkit/docs/BENCH-CONTRACT.md), as a client in another language would use it:
// wait for the app in GET /_bench/stats, POST /_bench/flood, count every event by type until
// the `bench-done` ChannelUserevent, and compare with the counts the flood announced and with
// GET /_bench/stats.
//
// usage: node bench.js BASE_URL USER PASSWORD
// exit 0 only if both floods (mix=full, then mix=stasis) arrived complete.
'use strict';

var http = require('http');
var client = require('ari-client');

var base = process.argv[2];
var user = process.argv[3] || 'asterisk';
var password = process.argv[4] || 'asterisk';
var APP = 'nodebench';
var TYPES = ['StasisStart', 'ChannelStateChange', 'ChannelVarset', 'ChannelDtmfReceived',
  'StasisEnd', 'ChannelDestroyed', 'ChannelUserevent'];

function fail(msg) {
  console.error('FAIL: ' + msg);
  process.exit(1);
}

setTimeout(function () { fail('timed out'); }, 60000).unref();

function control(method, path, cb) {
  var req = http.request(base + path, { method: method }, function (res) {
    var body = '';
    res.on('data', function (d) { body += d; });
    res.on('end', function () {
      var json;
      try { json = JSON.parse(body); } catch (e) { return fail(method + ' ' + path + ': not JSON: ' + body); }
      cb(res.statusCode, json);
    });
  });
  req.on('error', function (e) { fail(method + ' ' + path + ': ' + e); });
  req.end();
}

function whenRegistered(attempt, cb) {
  control('GET', '/_bench/stats', function (status, stats) {
    if (status !== 200) { return fail('GET /_bench/stats answered ' + status); }
    if (stats.apps.indexOf(APP) >= 0) { return cb(stats); }
    if (attempt > 200) { return fail('app ' + APP + ' never appeared in /_bench/stats apps'); }
    setTimeout(function () { whenRegistered(attempt + 1, cb); }, 50);
  });
}

function sameCounts(a, b) {
  var keys = Object.keys(a).concat(Object.keys(b));
  return keys.every(function (k) { return (a[k] || 0) === (b[k] || 0); });
}

client.connect(base, user, password, function (err, ari) {
  if (err) { fail('connect: ' + (err.message || err)); }
  var counts = {};
  var onDone = null;
  TYPES.forEach(function (t) {
    ari.on(t, function (event) {
      counts[t] = (counts[t] || 0) + 1;
      if (t === 'ChannelUserevent' && event.eventname === 'bench-done' && onDone) {
        var cb = onDone;
        onDone = null;
        cb();
      }
    });
  });

  function flood(n, channels, mix, index, next) {
    counts = {};
    var q = '/_bench/flood?n=' + n + '&channels=' + channels + '&app=' + APP + '&mix=' + mix;
    control('POST', q, function (status, announced) {
      if (status !== 202) { return fail('POST ' + q + ': ' + status + ' ' + JSON.stringify(announced)); }
      var check = function () {
        if (!sameCounts(counts, announced.counts)) {
          return fail(mix + ': received ' + JSON.stringify(counts) + ', announced ' + JSON.stringify(announced.counts));
        }
        var received = Object.keys(counts).reduce(function (s, k) { return s + counts[k]; }, 0);
        if (received !== announced.frames) { return fail(mix + ': ' + received + ' frames, announced ' + announced.frames); }
        // The server's side, once its write has finished.
        (function poll(attempt) {
          control('GET', '/_bench/stats', function (status, stats) {
            var f = stats.floods[index];
            if (!f || !f.done) {
              if (attempt > 200) { return fail('flood ' + index + ' never done in /_bench/stats'); }
              return setTimeout(function () { poll(attempt + 1); }, 20);
            }
            if (!sameCounts(f.counts, announced.counts) || f.n !== n || f.channels !== channels ||
                f.mix !== mix || f.bytes !== announced.bytes) {
              return fail('stats ' + JSON.stringify(f) + ' differ from ' + JSON.stringify(announced));
            }
            console.log('flood ' + mix + ': ' + received + ' frames, ' + f.bytes + ' bytes, counts ' +
              JSON.stringify(counts) + ', server sent in ' + f.send_seconds.toFixed(3) + ' s');
            next(stats);
          });
        })(0);
      };
      // The sentinel may have arrived before the HTTP answer was read.
      if (counts.ChannelUserevent) { check(); } else { onDone = check; }
    });
  }

  whenRegistered(0, function (stats) {
    if (!(stats.connections_accepted >= 1) || typeof stats.rest_requests !== 'number' ||
        !Array.isArray(stats.floods)) {
      return fail('stats are not self-describing: ' + JSON.stringify(stats));
    }
    var floodsBefore = stats.floods.length;
    flood(3000, 100, 'full', floodsBefore, function () {
      if (!counts.ChannelDestroyed) { return fail('mix=full without ChannelDestroyed'); }
      flood(3000, 100, 'stasis', floodsBefore + 1, function (last) {
        if (counts.ChannelDestroyed) { return fail('mix=stasis with ChannelDestroyed'); }
        console.log('server: cpu ' + last.cpu_seconds + ' s, peak rss ' + last.peak_rss_bytes +
          ' bytes, ' + last.rest_requests + ' REST requests, ' + last.connections_accepted + ' connections');
        console.log('bench contract: passed');
        process.exit(0);
      });
    });
  });

  ari.start(APP);
});
