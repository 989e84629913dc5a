package deepseg.fiji;

/**
 * Runs one deepseg menu command. Implemented in Python (a JPype proxy) and registered with
 * {@link DeepSegCommand#register}.
 */
public interface CommandHandler {

    /**
     * Runs {@code command} (a menu label such as "DeepSeg Predict...").
     *
     * @param command the menu label
     * @param options the macro options ("key=value key2=[a b]"), or null when started from a menu
     * @return null on success, otherwise the error message to show (the handler never throws)
     */
    String run(String command, String options);
}
