package deepseg.fiji;

import ij.ImageStack;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * Bulk pixel copies between an {@link ImageStack} and a direct buffer over numpy memory: one call
 * per stack, memcpy speed, no per-pixel work in Python. Planes are packed one after the other in
 * stack order (ImageJ's C, Z, T order), row-major, in the machine's byte order.
 */
public final class Pixels {

    private Pixels() {
    }

    /** Copies planes {@code first .. first+count-1} (1-based) of {@code stack} into {@code target}. */
    public static void toBuffer(ImageStack stack, int first, int count, ByteBuffer target) {
        ByteBuffer bytes = target.duplicate().order(ByteOrder.nativeOrder());
        java.nio.ShortBuffer shorts = bytes.asShortBuffer();
        java.nio.FloatBuffer floats = bytes.asFloatBuffer();
        java.nio.IntBuffer ints = bytes.asIntBuffer();
        for (int i = first; i < first + count; i++) {
            Object pixels = stack.getPixels(i);
            if (pixels instanceof byte[])
                bytes.put((byte[]) pixels);
            else if (pixels instanceof short[])
                shorts.put((short[]) pixels);
            else if (pixels instanceof float[])
                floats.put((float[]) pixels);
            else if (pixels instanceof int[])
                ints.put((int[]) pixels);
            else
                throw new IllegalArgumentException("plane " + i + " has unsupported pixels: " + pixels);
        }
    }

    /**
     * Appends {@code n} planes read from {@code source} to {@code stack}; {@code bitDepth} is 8, 16,
     * 32 (float) or 24 (RGB packed in an int).
     */
    public static void addFromBuffer(ImageStack stack, ByteBuffer source, int n, int bitDepth) {
        ByteBuffer bytes = source.duplicate().order(ByteOrder.nativeOrder());
        java.nio.ShortBuffer shorts = bytes.asShortBuffer();
        java.nio.FloatBuffer floats = bytes.asFloatBuffer();
        java.nio.IntBuffer ints = bytes.asIntBuffer();
        int size = stack.getWidth() * stack.getHeight();
        for (int i = 0; i < n; i++) {
            Object pixels;
            switch (bitDepth) {
                case 8: {
                    byte[] plane = new byte[size];
                    bytes.get(plane);
                    pixels = plane;
                    break;
                }
                case 16: {
                    short[] plane = new short[size];
                    shorts.get(plane);
                    pixels = plane;
                    break;
                }
                case 32: {
                    float[] plane = new float[size];
                    floats.get(plane);
                    pixels = plane;
                    break;
                }
                case 24: {
                    int[] plane = new int[size];
                    ints.get(plane);
                    pixels = plane;
                    break;
                }
                default:
                    throw new IllegalArgumentException("bitDepth " + bitDepth + " is not 8, 16, 24 or 32");
            }
            stack.addSlice(null, pixels);
        }
    }
}
