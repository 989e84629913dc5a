package ij.macro;

/**
 * A macro interpreter for unattended runs: the first error stops the macro and is kept in
 * {@link #getFailure()} instead of being shown in a modal "Macro Error" dialog (which would wait
 * forever under a virtual display, and cannot be created headless).
 *
 * <p>It lives in package {@code ij.macro} because {@code Interpreter.showError} and
 * {@code Interpreter.setBatchMode} are package-private.
 */
public class DeepSegInterpreter extends Interpreter {

    private volatile String failure;

    /** The first error of the last run ("message in line N" and the line), or null. */
    public String getFailure() {
        return failure;
    }

    /** Turns ImageJ's macro batch mode (no image windows) on or off. */
    public static void useBatchMode(boolean on) {
        setBatchMode(on);
    }

    @Override
    void showError(String title, String msg, String[] variables) {
        if (failure == null)
            failure = msg;
        // The interpreter has already stopped (done = true). MACRO_CANCELED unwinds quietly: ImageJ's
        // Executer ignores it when the error came from inside a command.
        throw new RuntimeException(ij.Macro.MACRO_CANCELED);
    }
}
