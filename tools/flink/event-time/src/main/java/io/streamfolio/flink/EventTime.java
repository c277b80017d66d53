package io.streamfolio.flink;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.time.DateTimeException;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.ZoneId;
import java.time.ZoneOffset;
import java.time.ZonedDateTime;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.apache.flink.table.functions.ScalarFunction;

/**
 * {@code sf_event_time(value, heartbeat_fingerprint, format, max_future_skew_ms)}: the event time
 * (epoch ms UTC) a prices-topic message states, or 0 when it states none that may move a
 * watermark.
 *
 * <p>The job declares its row time as this function of the message bytes, so Flink's Kafka source
 * computes each partition's watermark from the event times in the messages (SEMANTICS §4). A
 * message states a time when it is a valid {@code PriceTick} (its {@code event_time}), a valid
 * {@code Heartbeat} (Avro single-object encoding with the given schema fingerprint; its {@code
 * time}) or, with format {@code bourse}, a valid reference {@code BourseData} quote (its
 * {@code field_last_traded_time}), and that time is at most {@code max_future_skew_ms} ahead of
 * the wall clock. Everything else (undecodable bytes, invalid values, records from the future)
 * yields 0, which never raises a watermark.
 *
 * <p>The checks are the Python decoder's ({@code streamfolio.messages}), never looser: the Python
 * decoder receives this value and dead-letters a record on which the two disagree, so a record
 * that moved a watermark is always one the job accepts.
 */
public final class EventTime extends ScalarFunction {

    private static final long serialVersionUID = 1L;

    /** What the function returns for a message that states no usable time. */
    public static final long NONE = 0L;

    /** The latest epoch millisecond the Python messages accept ({@code _MAX_EPOCH_MS}). */
    static final long MAX_EPOCH_MS = 253_402_214_399_999L;

    private static final String REFERENCE_NO_TIME = "1999-01-01T00:00:00Z";
    private static final int BOURSE_FIELDS = 28;
    private static final int BOURSE_DATE = 0;
    private static final int BOURSE_PRICE = 13;
    private static final int BOURSE_TICKER = 16;
    private static final int BOURSE_TIME = 19;

    // The same patterns as streamfolio.messages (Python's \d and \s also match non-ASCII digits
    // and spaces; Java's do not, so this side is the stricter one, as it must be).
    private static final String TIME =
            "(\\d{1,2}):(\\d{2})(?::(\\d{2})(?:[.,](\\d+))?)?\\s*(Z|z|[+-]\\d{2}(?::?\\d{2})?)?";
    private static final Pattern DATE_TIME =
            Pattern.compile("(\\d{4})-(\\d{2})-(\\d{2})[Tt ]" + TIME);
    private static final Pattern TIME_ONLY = Pattern.compile(TIME);
    private static final Pattern ISO_DATE = Pattern.compile("(\\d{4})-(\\d{2})-(\\d{2})(?:[Tt ][^\\n]*)?");
    private static final Pattern DMY_DATE = Pattern.compile("(\\d{2})/(\\d{2})/(\\d{4})(?:\\s[^\\n]*)?");
    private static final Pattern NUMBER =
            Pattern.compile("[+-]?(?:\\d+(?:\\.\\d*)?|\\.\\d+)(?:[eE][+-]?\\d+)?");
    private static final ZoneId EXCHANGE_ZONE = ZoneId.of("Africa/Casablanca");

    public long eval(byte[] value, long heartbeatFingerprint, String format, long maxFutureSkewMs) {
        if (value == null) {
            return NONE;
        }
        long time;
        try {
            if (isHeartbeat(value, heartbeatFingerprint)) {
                time = heartbeatTime(value);
            } else if ("bourse".equals(format)) {
                time = bourseTime(value);
            } else {
                time = tickTime(value);
            }
        } catch (Malformed e) {
            return NONE;
        }
        if (time < 0 || time > MAX_EPOCH_MS || time > System.currentTimeMillis() + maxFutureSkewMs) {
            return NONE;
        }
        return time;
    }

    /** Is this the marker of an Avro single-object encoding of the Heartbeat schema? */
    static boolean isHeartbeat(byte[] value, long fingerprint) {
        if (value.length < 10 || value[0] != (byte) 0xC3 || value[1] != (byte) 0x01) {
            return false;
        }
        return ByteBuffer.wrap(value, 2, 8).order(ByteOrder.LITTLE_ENDIAN).getLong() == fingerprint;
    }

    /** Heartbeat body: time (long), source (string); nothing after. */
    static long heartbeatTime(byte[] value) throws Malformed {
        Reader in = new Reader(value, 10);
        long time = in.readLong();
        in.readString();
        in.end();
        return time;
    }

    /** PriceTick: ticker, price, event_time, volume [null, double], source, sequence [null, long]. */
    static long tickTime(byte[] value) throws Malformed {
        Reader in = new Reader(value, 0);
        String ticker = in.readString();
        double price = in.readDouble();
        long eventTime = in.readLong();
        if (in.readUnionBranch() == 1) {
            double volume = in.readDouble();
            if (!(volume >= 0.0 && volume < Double.POSITIVE_INFINITY)) {
                throw new Malformed();
            }
        }
        in.readString();
        if (in.readUnionBranch() == 1) {
            in.readLong();
        }
        in.end();
        if (ticker.isEmpty() || !(price > 0.0 && price < Double.POSITIVE_INFINITY)) {
            throw new Malformed();
        }
        return eventTime;
    }

    /** BourseData: 28 strings; the ticker, price and time checked as price_tick_from_bourse does. */
    static long bourseTime(byte[] value) throws Malformed {
        Reader in = new Reader(value, 0);
        String[] fields = new String[BOURSE_FIELDS];
        for (int i = 0; i < BOURSE_FIELDS; i++) {
            fields[i] = in.readString();
        }
        in.end();
        if (fields[BOURSE_TICKER].strip().isEmpty()) {
            throw new Malformed();
        }
        parsePrice(fields[BOURSE_PRICE]);
        String date = fields[BOURSE_DATE];
        return parseEventTime(fields[BOURSE_TIME], date.isEmpty() ? null : date);
    }

    static double parsePrice(String text) throws Malformed {
        String cleaned = text.replace(" ", "").replace("\u00a0", "").replace("\u202f", "").replace("\t", "");
        if (cleaned.indexOf(',') >= 0) {
            if (cleaned.indexOf('.') >= 0 && cleaned.lastIndexOf('.') > cleaned.lastIndexOf(',')) {
                cleaned = cleaned.replace(",", "");
            } else {
                cleaned = cleaned.replace(".", "").replace(",", ".");
            }
        }
        if (!NUMBER.matcher(cleaned).matches()) {
            throw new Malformed();
        }
        double price = Double.parseDouble(cleaned);
        if (!(price > 0.0 && price < Double.POSITIVE_INFINITY)) {
            throw new Malformed();
        }
        return price;
    }

    static long parseEventTime(String text, String sessionDate) throws Malformed {
        String value = text.strip();
        if (value.equals(REFERENCE_NO_TIME)) {
            throw new Malformed();
        }
        try {
            LocalDate day;
            Matcher m = DATE_TIME.matcher(value);
            int first;
            if (m.matches()) {
                day = LocalDate.of(parseInt(m.group(1)), parseInt(m.group(2)), parseInt(m.group(3)));
                first = 4;
            } else {
                m = TIME_ONLY.matcher(value);
                if (!m.matches() || sessionDate == null) {
                    throw new Malformed();
                }
                day = parseDate(sessionDate);
                first = 1;
            }
            String fraction = m.group(first + 3);
            int micros = 0;
            if (fraction != null) {
                String six = fraction.length() > 6 ? fraction.substring(0, 6) : fraction;
                micros = parseInt((six + "000000").substring(0, 6));
            }
            String second = m.group(first + 2);
            LocalDateTime local = LocalDateTime.of(day.getYear(), day.getMonthValue(), day.getDayOfMonth(),
                    parseInt(m.group(first)), parseInt(m.group(first + 1)),
                    second == null ? 0 : parseInt(second), micros * 1000);
            String offset = m.group(first + 4);
            // An ambiguous local time takes the earlier offset and a skipped one the offset before
            // the gap: Python's fold=0, which the exchange's closed nights never exercise anyway.
            ZonedDateTime moment = offset == null
                    ? ZonedDateTime.ofLocal(local, EXCHANGE_ZONE, null)
                    : local.atZone(parseOffset(offset));
            return Math.floorDiv(moment.toEpochSecond() * 1_000_000L + micros, 1000L);
        } catch (DateTimeException | ArithmeticException e) {
            throw new Malformed();
        }
    }

    private static LocalDate parseDate(String text) throws Malformed {
        String value = text.strip();
        Matcher m = ISO_DATE.matcher(value);
        if (m.matches()) {
            return LocalDate.of(parseInt(m.group(1)), parseInt(m.group(2)), parseInt(m.group(3)));
        }
        m = DMY_DATE.matcher(value);
        if (m.matches()) {
            return LocalDate.of(parseInt(m.group(3)), parseInt(m.group(2)), parseInt(m.group(1)));
        }
        throw new Malformed();
    }

    private static ZoneOffset parseOffset(String text) throws Malformed {
        if (text.equals("Z") || text.equals("z")) {
            return ZoneOffset.UTC;
        }
        int sign = text.charAt(0) == '-' ? -1 : 1;
        String digits = text.substring(1).replace(":", "");
        int hours = parseInt(digits.substring(0, 2));
        int minutes = digits.length() > 2 ? parseInt(digits.substring(2)) : 0;
        if (hours > 23 || minutes > 59) {
            throw new Malformed();
        }
        return ZoneOffset.ofTotalSeconds(sign * (hours * 3600 + minutes * 60));
    }

    private static int parseInt(String digits) throws Malformed {
        try {
            return Integer.parseInt(digits);
        } catch (NumberFormatException e) {
            throw new Malformed();
        }
    }

    /** Not a message this function can read a time from. */
    static final class Malformed extends Exception {
        private static final long serialVersionUID = 1L;

        Malformed() {
            super(null, null, false, false);
        }
    }

    /** Avro binary decoding of the few types the three schemas use. */
    static final class Reader {
        private final byte[] data;
        private int pos;

        Reader(byte[] data, int pos) {
            this.data = data;
            this.pos = pos;
        }

        long readLong() throws Malformed {
            long raw = 0;
            for (int shift = 0; shift < 64; shift += 7) {
                if (pos >= data.length) {
                    throw new Malformed();
                }
                int b = data[pos++] & 0xFF;
                raw |= (long) (b & 0x7F) << shift;
                if ((b & 0x80) == 0) {
                    return (raw >>> 1) ^ -(raw & 1);
                }
            }
            throw new Malformed();
        }

        double readDouble() throws Malformed {
            if (data.length - pos < 8) {
                throw new Malformed();
            }
            double value = ByteBuffer.wrap(data, pos, 8).order(ByteOrder.LITTLE_ENDIAN).getDouble();
            pos += 8;
            return value;
        }

        String readString() throws Malformed {
            long length = readLong();
            if (length < 0 || length > data.length - pos) {
                throw new Malformed();
            }
            try {
                String text = StandardCharsets.UTF_8.newDecoder()
                        .onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT)
                        .decode(ByteBuffer.wrap(data, pos, (int) length))
                        .toString();
                pos += (int) length;
                return text;
            } catch (CharacterCodingException e) {
                throw new Malformed();
            }
        }

        /** The branch of a {@code ["null", T]} union: 0 or 1. */
        int readUnionBranch() throws Malformed {
            long branch = readLong();
            if (branch != 0 && branch != 1) {
                throw new Malformed();
            }
            return (int) branch;
        }

        void end() throws Malformed {
            if (pos != data.length) {
                throw new Malformed();
            }
        }
    }
}
