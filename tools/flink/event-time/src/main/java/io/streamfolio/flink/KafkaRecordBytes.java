package io.streamfolio.flink;

import java.nio.ByteBuffer;
import org.apache.flink.api.common.typeinfo.PrimitiveArrayTypeInfo;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.flink.util.Collector;

/**
 * A Kafka record as one byte array, for a Python operator: partition (int32), offset (int64),
 * key length (int32, -1 for null), key, value length (int32, -1 for null), value, timestamp
 * (int64: a tombstone's only time); big-endian.
 *
 * <p>PyFlink's {@code KafkaSource} only takes value-only deserializers, so without this the
 * Python side never sees a record's key (which must equal the portfolio id in its value) nor
 * where it was read (which a dead letter names). Decoded by
 * {@code streamfolio.flink.operators.kafka_record}.
 */
public final class KafkaRecordBytes implements KafkaRecordDeserializationSchema<byte[]> {
  private static final long serialVersionUID = 1L;

  @Override
  public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<byte[]> out) {
    byte[] key = record.key();
    byte[] value = record.value();
    int size =
        4 + 8 + 4 + (key == null ? 0 : key.length) + 4 + (value == null ? 0 : value.length) + 8;
    ByteBuffer buffer = ByteBuffer.allocate(size);
    buffer.putInt(record.partition());
    buffer.putLong(record.offset());
    buffer.putInt(key == null ? -1 : key.length);
    if (key != null) {
      buffer.put(key);
    }
    buffer.putInt(value == null ? -1 : value.length);
    if (value != null) {
      buffer.put(value);
    }
    buffer.putLong(record.timestamp());
    out.collect(buffer.array());
  }

  @Override
  public TypeInformation<byte[]> getProducedType() {
    return PrimitiveArrayTypeInfo.BYTE_PRIMITIVE_ARRAY_TYPE_INFO;
  }
}
