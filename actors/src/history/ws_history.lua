#!lua name=ws_history
--[[
Durable publishing for websocket-service: a per-user history (a stream trimmed to a fixed
size, expiring after a ttl of quiet), a meta record (epoch, top offset) and the publish to
the user's durable channel, in ONE atomic step. Loaded by the server with FUNCTION LOAD
REPLACE after it has replaced the __PLACEHOLDERS__ below with its settings, so callers need
not know them.

  FCALL ws_publish 1 <channel> <payload> [idempotency_key]      -> {epoch, offset}
  FCALL ws_publish_once 1 <channel> <payload> <dedupe_id> <window_s>
                                                     -> {epoch, offset, 1 new | 0 duplicate}
  FCALL ws_read 1 <channel> <after> <max>          -> {epoch, top, offset, payload, ms, ...}
  FCALL ws_renew_epoch 1 <channel> <lost_epoch>                 -> {epoch, top}
  FCALL_RO ws_names 1 <channel> [idempotency_key]  -> {durable, stream, meta[, idempotency]}

<channel> is the user's plain channel (e.g. ws:alice). Every other name is derived from it
exactly as UserKeys::of_channel does in Rust (actors/src/broker/keys.rs), so they all share
the channel's hash slot.
]]

local SIZE = __SIZE__
local TTL = __TTL__
local PUBLISH = '__PUBLISH__'
local IDEMPOTENCY_TTL = 300
local SLOTS = 16384

-- CRC16/XMODEM, table driven, as Redis Cluster computes it. The table is built on first
-- use: the `bit` library is only there while a function runs, not while the library loads.
local crc_table = nil

local function build_crc_table()
  local built = {}
  for i = 0, 255 do
    local crc = bit.lshift(i, 8)
    for _ = 1, 8 do
      if bit.band(crc, 0x8000) ~= 0 then
        crc = bit.bxor(bit.lshift(crc, 1), 0x1021)
      else
        crc = bit.lshift(crc, 1)
      end
      crc = bit.band(crc, 0xFFFF)
    end
    built[i] = crc
  end
  return built
end

local function crc16(text)
  crc_table = crc_table or build_crc_table()
  local crc = 0
  for i = 1, #text do
    local index = bit.band(bit.bxor(bit.rshift(crc, 8), string.byte(text, i)), 0xFF)
    crc = bit.band(bit.bxor(bit.lshift(crc, 8), crc_table[index]), 0xFFFF)
  end
  return crc
end

-- The part of a name Redis Cluster hashes: its non-empty tag, or the whole name.
local function hashed_part(name)
  local open = string.find(name, '{', 1, true)
  if not open then
    return name
  end
  local close = string.find(name, '}', open + 1, true)
  if close and close > open + 1 then
    return string.sub(name, open + 1, close - 1)
  end
  return name
end

local function slot(name)
  return crc16(hashed_part(name)) % SLOTS
end

-- The smallest decimal integer hashing to each slot, found by scanning upward from 0; what
-- one scan finds is kept for the next (the library's Lua state lives until it is reloaded).
local decimal_tags = {}
local scanned = -1

local function decimal_tag(want)
  while decimal_tags[want] == nil do
    scanned = scanned + 1
    local found = crc16(tostring(scanned)) % SLOTS
    if decimal_tags[found] == nil then
      decimal_tags[found] = scanned
    end
  end
  return tostring(decimal_tags[want])
end

-- A tag (no '}' in it) hashing to the channel's slot.
local function tag_of(channel)
  local hashed = hashed_part(channel)
  if #hashed < #channel or not string.find(channel, '}', 1, true) then
    return hashed
  end
  return decimal_tag(slot(channel))
end

-- The user's names: '{tag}' then the channel unless the tag is the channel.
local function names_of(channel)
  local tag = tag_of(channel)
  local base = '{' .. tag .. '}'
  if tag ~= channel then
    base = base .. channel
  end
  return {
    durable = base,
    stream = base .. ':h',
    meta = base .. ':m',
    idempotency_prefix = base .. ':i:',
    dedupe_prefix = base .. ':d:',
  }
end

local function int(n)
  return string.format('%d', n)
end

local function now()
  local time = redis.call('TIME')
  return tonumber(time[1]), tonumber(time[2])
end

-- A new epoch: hex seconds then 5 hex digits of microseconds ([0-9a-f]{13,}).
local function new_epoch(sec, usec)
  return string.format('%x%05x', sec, usec)
end

-- Starts a new epoch with the given top: the old stream goes, offsets continue from top.
local function start_epoch(names, top, lost)
  local sec, usec = now()
  local epoch = new_epoch(sec, usec)
  if epoch == lost then
    epoch = epoch .. '0'
  end
  redis.call('DEL', names.stream)
  redis.call('HSET', names.meta, 'epoch', epoch, 'top', int(top))
  redis.call('EXPIRE', names.meta, TTL)
  return epoch
end

-- The epoch and top of the meta record, or nil when there is none.
local function read_meta(names)
  local meta = redis.call('HMGET', names.meta, 'epoch', 'top')
  if not meta[1] then
    return nil, nil
  end
  return meta[1], tonumber(meta[2]) or 0
end

-- The epoch and top in force, making a new epoch (top 0) when the user has none.
local function current_meta(names)
  local epoch, top = read_meta(names)
  if not epoch then
    top = 0
    epoch = start_epoch(names, top, nil)
  end
  return epoch, top
end

local function position_of(record)
  local epoch, offset = string.match(record, '^(.*):(%d+)$')
  return { epoch, tonumber(offset) }
end

-- The position stored in a record (idempotency or dedupe), or nil when there is none.
local function recall(record)
  local done = redis.call('GET', record)
  if done then
    return position_of(done)
  end
  return nil
end

local function remember(record, epoch, offset, ttl)
  redis.call('SET', record, epoch .. ':' .. int(offset), 'EX', int(ttl))
end

-- Appends `payload` to the user's history and publishes it on the durable channel: the one
-- durable step every publishing function shares. Answers the epoch and the new offset.
local function append(names, payload)
  local epoch, top = current_meta(names)
  local offset = top + 1
  local sec, usec = now()
  local ms = sec * 1000 + math.floor(usec / 1000)
  redis.call('XADD', names.stream, 'MAXLEN', SIZE, int(offset) .. '-0', 'd', payload, 't', int(ms))
  redis.call('HSET', names.meta, 'top', int(offset))
  redis.call('EXPIRE', names.stream, TTL)
  redis.call('EXPIRE', names.meta, TTL)
  redis.call(PUBLISH, names.durable, epoch .. ':' .. int(offset) .. ':' .. payload)
  return epoch, offset
end

local function ws_publish(keys, args)
  local names = names_of(keys[1])
  local payload = args[1]
  if payload == nil then
    return redis.error_reply('ERR ws_publish needs a payload')
  end
  local record = nil
  if args[2] then
    record = names.idempotency_prefix .. args[2]
    local done = recall(record)
    if done then
      return done
    end
  end
  local epoch, offset = append(names, payload)
  if record then
    remember(record, epoch, offset, IDEMPOTENCY_TTL)
  end
  return { epoch, offset }
end

-- Publishes durably unless `dedupe_id` was published to this user within `window_s` seconds
-- (the Kafka ingest's event ids): the dedupe record and the append happen together or not at
-- all. The third element is 1 when published now, 0 for a duplicate (the stored position).
local function ws_publish_once(keys, args)
  local names = names_of(keys[1])
  local payload, id, window = args[1], args[2], tonumber(args[3])
  if payload == nil or id == nil or not window or window < 1 or window % 1 ~= 0 then
    return redis.error_reply('ERR ws_publish_once needs <payload> <dedupe_id> <window_s> (integer >= 1)')
  end
  local record = names.dedupe_prefix .. id
  local done = recall(record)
  if done then
    return { done[1], done[2], 0 }
  end
  local epoch, offset = append(names, payload)
  remember(record, epoch, offset, window)
  return { epoch, offset, 1 }
end

-- The value of field `name` in a stream entry's flat field list.
local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then
      return fields[i + 1]
    end
  end
  return nil
end

local function append_entries(reply, stream, after, max)
  local entries = redis.call('XRANGE', stream, int(after + 1) .. '-0', '+', 'COUNT', int(max))
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    reply[#reply + 1] = tonumber(string.match(entry[1], '^(%d+)-'))
    reply[#reply + 1] = field(fields, 'd') or ''
    reply[#reply + 1] = tonumber(field(fields, 't')) or 0
  end
end

local function ws_read(keys, args)
  local names = names_of(keys[1])
  local after, max = tonumber(args[1]), tonumber(args[2])
  if not after or not max or after < 0 or max < 0 then
    return redis.error_reply('ERR ws_read needs <after> <max>, non-negative integers')
  end
  local epoch, top = current_meta(names)
  local reply = { epoch, top }
  if max > 0 and after < top then
    append_entries(reply, names.stream, after, max)
  end
  return reply
end

local function ws_renew_epoch(keys, args)
  local names = names_of(keys[1])
  local lost = args[1]
  if lost == nil then
    return redis.error_reply('ERR ws_renew_epoch needs <lost_epoch>')
  end
  local epoch, top = read_meta(names)
  top = top or 0
  if epoch == nil or epoch == lost then
    epoch = start_epoch(names, top, lost)
  end
  return { epoch, top }
end

local function ws_names(keys, args)
  local names = names_of(keys[1])
  local reply = { names.durable, names.stream, names.meta }
  if args[1] then
    reply[#reply + 1] = names.idempotency_prefix .. args[1]
  end
  return reply
end

redis.register_function('ws_publish', ws_publish)
redis.register_function('ws_publish_once', ws_publish_once)
redis.register_function('ws_read', ws_read)
redis.register_function('ws_renew_epoch', ws_renew_epoch)
redis.register_function({ function_name = 'ws_names', callback = ws_names, flags = { 'no-writes' } })
