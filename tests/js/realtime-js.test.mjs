// Drives a real Threadline server with the official @supabase/realtime-js
// client, unchanged: Postgres Changes in the documented shapes, the filter
// grammar its builder writes, Broadcast and Presence on authorized topics.
import './postgres-changes.mjs';
import './filters.mjs';
import './rooms.mjs';
