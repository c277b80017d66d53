package io.streamfolio.flink;

import java.nio.BufferUnderflowException;
import java.nio.ByteBuffer;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.types.Row;
import org.apache.flink.table.functions.TableFunction;

/**
 * {@code sf_keyed_records(batch)}: the Kafka records (key, value) packed in one batch, in order.
 *
 * <p>The job's portfolio step updates a shard's portfolios in one step per bar and emits their
 * statistics and metrics as one batch each ({@code streamfolio.flink.records.keyed_batch}): one
 * record crossing from Python into the JVM per shard and bar instead of one per portfolio, which
 * was the largest cost left per portfolio (BENCHMARKS.md, "Ten thousand portfolios"). The Kafka
 * sinks read the records back out of the batch with this function.
 *
 * <p>A batch is a sequence of records, each a key (4-byte big-endian length, -1 for none, then
 * the bytes) and a value (the same). A malformed batch is a bug of the job, not bad input: it
 * fails the task rather than losing records silently.
 */
@FunctionHint(output = @DataTypeHint("ROW<k BYTES, v BYTES>"))
public final class KeyedRecords extends TableFunction<Row> {

    private static final long serialVersionUID = 1L;

    public void eval(byte[] batch) {
        if (batch == null) {
            return;
        }
        ByteBuffer buffer = ByteBuffer.wrap(batch);
        try {
            while (buffer.hasRemaining()) {
                byte[] key = read(buffer);
                byte[] value = read(buffer);
                collect(Row.of(key, value));
            }
        } catch (BufferUnderflowException | NegativeArraySizeException e) {
            throw new IllegalArgumentException(
                    "a batch of keyed records is cut short at byte " + buffer.position(), e);
        }
    }

    private static byte[] read(ByteBuffer buffer) {
        int size = buffer.getInt();
        if (size == -1) {
            return null;
        }
        byte[] bytes = new byte[size];
        buffer.get(bytes);
        return bytes;
    }
}
