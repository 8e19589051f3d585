// The hello-world IVR of node-ari-client's README (callback style), run against ari-mock,
// instrumented to check that it ran to the end.
//
// usage: node hello.js BASE_URL USER PASSWORD DTMF
// exit 0 only if: the call entered Stasis, was answered, sound:hello-world played to the
// end, every digit of DTMF was received and answered with its sound, '#' played
// sound:vm-goodbye, and the hangup succeeded.
'use strict';

var http = require('http');
var util = require('util');
var client = require('ari-client');

var base = process.argv[2];
var user = process.argv[3] || 'asterisk';
var password = process.argv[4] || 'asterisk';
var dtmf = process.argv[5] || '12#';

var seen = {
  stasisStart: null,
  answered: false,
  played: [],      // media of every PlaybackFinished, in order
  digits: '',
  hungUp: false,
};

function fail(msg) {
  console.error('FAIL: ' + msg);
  console.error('seen: ' + JSON.stringify(seen));
  process.exit(1);
}

setTimeout(function () { fail('timed out before the IVR finished'); }, 60000).unref();

function control(method, path, cb) {
  var req = http.request(base + path, { method: method }, function (res) {
    var body = '';
    res.on('data', function (d) { body += d; });
    res.on('end', function () { cb(null, res.statusCode, body); });
  });
  req.on('error', cb);
  req.end();
}

// Places the simulated call once the app's WebSocket is registered.
function placeCallWhenRegistered(attempt) {
  control('GET', '/_sim/connections', function (err, status, body) {
    if (err) { return fail('GET /_sim/connections: ' + err); }
    var registered = JSON.parse(body).some(function (c) {
      return c.apps.indexOf('hello') >= 0;
    });
    if (!registered) {
      if (attempt > 200) { return fail('app hello never registered'); }
      return setTimeout(function () { placeCallWhenRegistered(attempt + 1); }, 50);
    }
    var q = '/_sim/call?app=hello&args=demo&caller=Alice%20%3C100%3E&dtmf=' +
      encodeURIComponent(dtmf) + '&dtmf_delay_ms=3000&dtmf_interval_ms=200';
    control('POST', q, function (err, status, body) {
      if (err || status !== 200) { return fail('POST /_sim/call: ' + (err || status + ' ' + body)); }
      console.log('placed call ' + JSON.parse(body).channel_id);
    });
  });
}

function finish() {
  var want = dtmf.split('').filter(function (d) { return d !== '#'; }).map(function (d) {
    return d === '*' ? 'sound:tt-monkeys' : 'sound:digits/' + d;
  });
  if (!seen.stasisStart) { return fail('no StasisStart'); }
  if (seen.stasisStart.args.join(',') !== 'demo') { return fail('StasisStart args ' + seen.stasisStart.args); }
  if (!seen.answered) { return fail('channel not answered'); }
  if (seen.played[0] !== 'sound:hello-world') { return fail('hello-world did not play first'); }
  if (seen.digits !== dtmf) { return fail('digits ' + seen.digits + ' != ' + dtmf); }
  want.forEach(function (m) {
    if (seen.played.indexOf(m) < 0) { fail('never played ' + m); }
  });
  if (seen.played.indexOf('sound:vm-goodbye') < 0) { return fail('never played vm-goodbye'); }
  if (!seen.hungUp) { return fail('hangup failed'); }
  console.log('IVR ran to the end: ' + JSON.stringify(seen));
  process.exit(0);
}

client.connect(base, user, password, client_loaded);

function client_loaded (err, ari) {

  if (err) {
    fail('connect: ' + (err.message || err));
  }

  ari.once('StasisStart', channel_joined);

  function channel_joined (event, incoming) {
    seen.stasisStart = { channel: incoming.id, args: event.args };
    incoming.on('ChannelDtmfReceived', dtmf_received);

    incoming.answer(function (err) {
      if (err) { return fail('answer: ' + err.message); }
      seen.answered = true;
      play(incoming, 'sound:hello-world');
    });
  }

  function dtmf_received (event, channel) {
    var digit = event.digit;
    seen.digits += digit;
    switch (digit) {
      case '#':
        play(channel, 'sound:vm-goodbye', function (err) {
          channel.hangup(function (err) {
            if (err) { return fail('hangup: ' + err.message); }
            seen.hungUp = true;
            finish();
          });
        });
        break;
      case '*':
        play(channel, 'sound:tt-monkeys');
        break;
      default:
        play(channel, util.format('sound:digits/%s', digit));
    }
  }

  function play (channel, sound, callback) {
    var playback = ari.Playback();

    playback.on('PlaybackFinished', function (event, playback) {
      seen.played.push(event.playback.media_uri);
      if (callback) {
        callback(null);
      }
    });

    channel.play({media: sound}, playback, function (err, playback) {
      if (err) { fail('play ' + sound + ': ' + err.message); }
    });
  }

  ari.start('hello');
  placeCallWhenRegistered(0);
}
